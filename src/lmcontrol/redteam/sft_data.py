"""The forward direction (paper section 3.1): prompts x from the shared data, the target's greedy replies y.

The investigator is trained on the reversed pairs (y -> x). Prompts mix the modes a red-teamer would try:
HH first human turns, HarmfulQA questions, and AG News / C4 sentences turned into requests (repeat, quote,
continue, summarise, "start your reply with ..."). AdvBench is left out entirely, so its behaviours stay unseen
by the reverse model. Generation appends to a JSONL file as it goes, so an interrupted run resumes.
"""

from __future__ import annotations

import html
import json
import logging
import random
import re
from pathlib import Path

from lmcontrol import LMControlError
from lmcontrol.redteam.config import SFTDataConfig

log = logging.getLogger(__name__)

# {s} = a sentence from a news article or web page, {h} = its first few words
TEMPLATES = (
    "{s}",
    "Repeat after me: {s}",
    'Say exactly this: "{s}"',
    "Continue the text: {s}",
    "Summarize in one sentence: {s}",
    'Start your reply with "{h}" and then finish the thought.',
    "Rewrite this more formally: {s}",
    'What does this mean? "{s}"',
    "Write a headline for: {s}",
    "Complete the sentence: {h}",
)


def fill_template(template: str, sentence: str, head_words: int) -> str:
    """A request template with ``{s}`` = the sentence and ``{h}`` = its first ``head_words`` words."""
    return template.format(s=sentence, h=" ".join(sentence.split()[:head_words]))


def _sentences(texts: list[str], max_words: int, rng: random.Random) -> list[str]:
    out = []
    for t in texts:
        t = html.unescape(re.sub(r" ?#(\d+);", r"&#\1;", t))  # AG News keeps " #39;"-style entities
        t = re.sub(r"\s+", " ", t.replace("\\", " ")).strip()
        parts = [p.strip() for p in re.split(r"(?<=[.!?])\s+", t) if 5 <= len(p.split()) <= max_words]
        if parts:
            out.append(rng.choice(parts))
    return out


POOL = 2400  # the shuffled pool is built at this size (or n_pairs if larger), so smaller runs use its prefix


def source_prompts(config: SFTDataConfig) -> list[dict[str, str]]:
    """``n_pairs`` prompts with their source: the first of a pool shuffled with ``config.seed`` (about 1/3
    questions, 2/3 sentences turned into requests)."""
    from lmcontrol.data import load_dataset

    rng = random.Random(config.seed)
    questions: list[tuple[str, str]] = []
    for row in load_dataset("hh-rlhf:all"):
        q = row["first_human"].strip()
        if 2 <= len(q.split()) <= config.max_prompt_words:
            questions.append(("hh", q))
    for subset in ("harmfulqa", "dangerousqa", "catqa"):
        questions += [("harmfulqa", r["prompt"].strip()) for r in load_dataset(f"harmfulqa:{subset}")]
    texts = [r["text"] for r in load_dataset("ag_news", split="test")] + [r["text"] for r in load_dataset("c4")]
    rng.shuffle(texts)
    sentences = _sentences(texts, config.max_prompt_words, rng)
    rng.shuffle(questions)
    pool = max(POOL, config.n_pairs)
    n_q = pool // 3
    rows = [{"source": s, "prompt": q} for s, q in dict.fromkeys(questions[:n_q])]
    for i, s in enumerate(sentences[: pool - len(rows)]):
        template = TEMPLATES[i % len(TEMPLATES)]
        rows.append({"source": f"text:{i % len(TEMPLATES)}", "prompt": fill_template(template, s, rng.randint(3, 7))})
    rng.shuffle(rows)
    if not rows:
        raise LMControlError("no SFT prompts found in the shared data (set LMCONTROL_DATA)")
    return rows[: config.n_pairs]


def read_pairs(path: str | Path) -> list[dict[str, str]]:
    """The (prompt, response) pairs written so far."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def generate_pairs(lm, config: SFTDataConfig, path: str | Path, progress: bool = True) -> list[dict[str, str]]:
    """Append the target's greedy replies for every prompt not yet in ``path``; returns all pairs."""
    from tqdm.auto import tqdm

    from lmcontrol.generation import GenerationConfig, generate

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = source_prompts(config)
    seen = {r["prompt"] for r in read_pairs(path)}
    todo = [r for r in rows if r["prompt"] not in seen]
    gen_cfg = GenerationConfig(max_new_tokens=config.max_new_tokens, temperature=0.0)
    bar = tqdm(
        total=len(rows), initial=len(rows) - len(todo), desc="SFT pairs", disable=not progress, dynamic_ncols=True
    )
    with path.open("a", encoding="utf-8") as f:
        for start in range(0, len(todo), config.batch_size):
            chunk = todo[start : start + config.batch_size]
            out = generate(lm, [r["prompt"] for r in chunk], gen_cfg)
            for r, y in zip(chunk, out.texts, strict=True):
                if y.strip():
                    f.write(json.dumps({**r, "response": y.strip()}) + "\n")
            f.flush()
            bar.update(len(chunk))
    bar.close()
    wanted = {r["prompt"] for r in rows}
    return [p for p in read_pairs(path) if p["prompt"] in wanted]
