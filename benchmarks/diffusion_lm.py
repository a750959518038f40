"""Diffusion-LM benchmark (issue 7): control success and fluency per task for Diffusion-LM and the FUDGE AR
baseline, steps sweep, infilling, latency.

    nice -n 10 python benchmarks/diffusion_lm.py                     # full run (~40 min on 1 shared core)
    python benchmarks/diffusion_lm.py --quick --out-json /tmp/d.json  # smoke run

Methods:

- Diffusion-LM: ``artifacts/diffusion-lm-e2e`` with plug-and-play control (attribute/POS classifier
  ``artifacts/diffusion-lm-e2e-classifier``, span classifier ``artifacts/diffusion-lm-e2e-span-classifier``).
- FUDGE AR: the embedded SmolLM2-135M with the committed E2E prefix (``prefix:artifacts/prefix-e2e``, chat template
  off) and FUDGE guidance (``lmcontrol.diffusion_lm.fudge``) from the *same* classifiers at t = 0. The targets come
  without an MR, so the AR model sees one fixed MR-free prompt (``--ar-prompt``) and FUDGE does all the steering.
  Outputs are re-tokenised into E2E words (``e2e_words``) before scoring, so both methods are scored alike.

Tasks and metrics (targets from the Diffusion-LM repo, ``load_dataset("e2e:control", ...)``):

- semantic content: ``field : value`` targets; success = the (tokenized) value occurs in the sample
  (case-insensitive, word boundaries; familyFriendly yes/no = a family/kid/child-friendly mention without/with
  a negation). The paper scores the same way (exact match of the value).
- POS: success = word-level accuracy of spaCy's UPOS tags of the sample against the target sequence
  (positions beyond the shorter of the two count as misses).
- syntax spans: the Diffusion-LM ``target_spans.json`` targets whose span is a constituent of its own source
  sentence under our definition (a spaCy dependency subtree span, ``lmcontrol.diffusion_lm.spans``) and has >= 2
  words; success = the span is a subtree span of the sample's spaCy parse.
- length: success = the sample has exactly the target number of words (10–40).
- composition: semantic content + POS (``pos_attr`` targets); both metrics are reported.
- infilling: left and right context from E2E dev references; success = both contexts kept (Diffusion-LM: by
  imputation; AR: the left context is the prompt's tail, success needs the continuation to end with the right
  context).
- lm-score: corpus perplexity of the samples under an E2E AR model, SmolLM2-135M + the E2E prefix with the same
  MR-free prompt (``--judge prefix``; ``--judge bare`` = the embedded model alone). The AR baseline's samples were
  drawn from this same model, which favours them.

Writes ``--out-json`` (results + samples) and ``--figure`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lmcontrol.data import load_dataset
from lmcontrol.diffusion_lm.classifiers import pos_tag
from lmcontrol.diffusion_lm.control import ControlTarget, DiffusionLMPipeline, SampleSettings
from lmcontrol.diffusion_lm.fudge import e2e_words
from lmcontrol.diffusion_lm.spans import parse_spans, span_hits

log = logging.getLogger("bench.diffusion_lm")
FAMILY = re.compile(r"(family|kid|child)[\w\s-]*friendly|\bfamilies\b|\bchildren\b|\bkids\b", re.I)
NEGATION = re.compile(r"\b(not|no|n't|non)\b", re.I)
Generator = Callable[[int, ControlTarget, int], list[str]]  # (n, target, seed) -> texts in E2E words
Results = list[tuple[ControlTarget, list[str]]]


# --- metrics -----------------------------------------------------------------------------------------------
def attribute_hit(text: str, field: str, value: str) -> bool:
    """Does ``text`` express ``field = value``? (exact value match; see the module docstring)."""
    if field == "familyFriendly":
        mentioned, negated = bool(FAMILY.search(text)), bool(NEGATION.search(text))
        return mentioned and (negated if value.lower() == "no" else not negated)
    return re.search(rf"(?<!\w){re.escape(value.lower())}(?!\w)", text.lower()) is not None


def pos_accuracy(texts: list[str], target: list[str]) -> list[float]:
    """Word-level agreement of spaCy tags with the target (divided by the longer length)."""
    tagged = pos_tag([t.split() for t in texts])
    return [sum(a == b for a, b in zip(tags, target, strict=False)) / max(len(tags), len(target), 1) for tags in tagged]


def _pct(hits: list) -> float:
    return round(100.0 * sum(hits) / max(len(hits), 1), 1)


def score_attribute(results: Results) -> float:
    return _pct([attribute_hit(t, *target.attribute) for target, texts in results for t in texts])


def score_pos(results: Results) -> float:
    return _pct([a for target, texts in results for a in pos_accuracy(texts, list(target.pos))])


def score_span(results: Results) -> float:
    return _pct([h for target, texts in results for h in span_hits(texts, target.span)])


def score_length(results: Results) -> float:
    return _pct([len(t.split()) == target.length for target, texts in results for t in texts])


def score_infill(results: Results) -> float:
    return _pct([t.startswith(tg.left) and t.endswith(tg.right) for tg, texts in results for t in texts])


class LMScorer:
    """Corpus perplexity of texts under the judge: SmolLM2 (+ the E2E KV prefix) after a fixed prompt."""

    def __init__(self, lm, prefix, prompt: str) -> None:  # noqa: ANN001 - LanguageModel, Control | None
        self.lm, self.prefix, self.prompt = lm, prefix, prompt

    @torch.no_grad()
    def __call__(self, texts: list[str], batch_size: int = 16) -> float:
        from lmcontrol.controls import Rows
        from lmcontrol.generation import build_prefill, forward_hidden, lm_logits, tokenize_prompts

        texts = [t for t in texts if t.strip()]
        if not texts:
            return float("nan")
        tok = self.lm.tokenizer
        p_ids = tokenize_prompts(self.lm, [self.prompt], False)[0][0].tolist()
        nll, count = 0.0, 0
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            rows = [p_ids + tok(t, add_special_tokens=False)["input_ids"] for t in chunk]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), int(tok.pad_token_id))  # (B, T) left padded
            mask = torch.zeros(len(rows), width, dtype=torch.long)
            labels = torch.full((len(rows), width), -100)
            for i, r in enumerate(rows):
                ids[i, width - len(r) :] = torch.tensor(r)
                mask[i, width - len(r) :] = 1
                labels[i, width - len(r) + len(p_ids) :] = ids[i, width - len(r) + len(p_ids) :]
            kv = None
            if self.prefix is not None:
                kv = self.prefix.soft_prompt(Rows(chunk, chunk, list(range(len(chunk))), [{} for _ in chunk]))
            h = forward_hidden(self.lm, build_prefill(self.lm, ids, mask, None, kv))  # (B, T, d)
            logits = lm_logits(self.lm, h[:, :-1]).float()  # (B, T-1, V): position t predicts token t+1
            target = labels[:, 1:]
            nll += float(
                torch.nn.functional.cross_entropy(logits[target != -100], target[target != -100], reduction="sum")
            )
            count += int((target != -100).sum())
        return math.exp(nll / count) if count else float("nan")


# --- the two generators --------------------------------------------------------------------------------------
class FudgeAR:
    """SmolLM2 + E2E prefix + FUDGE from the Diffusion-LM classifiers; texts come back in E2E words."""

    def __init__(self, lm, prefix, pipe: DiffusionLMPipeline, args: argparse.Namespace) -> None:  # noqa: ANN001
        self.lm, self.prefix, self.pipe, self.args = lm, prefix, pipe, args

    def __call__(self, n: int, target: ControlTarget, seed: int) -> list[str]:
        from lmcontrol.diffusion_lm.fudge import DiffusionClassifierScorer, FudgeControl
        from lmcontrol.generation import GenerationConfig, generate

        controls = [self.prefix]
        prompt, left = self.args.ar_prompt, ""
        if target.infilling:  # no right-context conditioning: the left context ends the prompt
            left = target.left or ""
            prompt = prompt + left
        elif target != ControlTarget():
            scorer = DiffusionClassifierScorer(self.pipe.model, target, self.pipe.classifier, self.pipe.span_classifier)
            controls.append(
                FudgeControl(
                    scorer, top_k=self.args.fudge_k, weight=self.args.fudge_weight, always_eos=target.length is not None
                )
            )
        cfg = GenerationConfig(
            max_new_tokens=self.args.ar_max_new_tokens, temperature=self.args.ar_temperature, seed=seed, chat=False
        )
        out = generate(self.lm, [prompt] * n, cfg, controls)
        texts = [" ".join(e2e_words(t.strip().split("\n")[0])) for t in out.texts]
        return [f"{left} {t}".strip() if left else t for t in texts]


def run_task(gen: Generator, targets: list[ControlTarget], samples: int, seed: int) -> tuple[Results, float]:
    """Sample ``samples`` sentences per target; returns (target, texts) pairs and seconds."""
    out, t0 = [], time.perf_counter()
    for i, target in enumerate(targets):
        out.append((target, gen(samples, target, seed + i)))
    return out, time.perf_counter() - t0


def every(rows: list, n: int) -> list:
    """``n`` rows spread evenly over ``rows``."""
    step = max(len(rows) // n, 1)
    return rows[::step][:n]


def span_targets(n: int, seq_len: int) -> list[ControlTarget]:
    """Paper span targets that are constituents of their own sentence under our definition (>= 2 words)."""
    rows = load_dataset("e2e:control", split="spans")
    parsed = parse_spans([r["text"].split() for r in rows])
    kept = []
    for row, spans in zip(rows, parsed, strict=True):
        i, j = int(row["spans"][0][0]), int(row["spans"][0][1])
        if i < j <= seq_len - 3 and (i, j) in spans:
            kept.append(ControlTarget(span=(i, j)))
    log.info("span targets: %d of %d are subtree spans of their sentence", len(kept), len(rows))
    return every(kept, n)


def build_targets(args: argparse.Namespace, seq_len: int, vocab) -> dict[str, list[ControlTarget]]:  # noqa: ANN001
    n = args.targets
    attr_rows = every(load_dataset("e2e:control", split="attribute"), n)
    pos_rows = every(load_dataset("e2e:control", split="pos"), n)
    comp_rows = every(load_dataset("e2e:control", split="pos_attr"), n)
    refs = every([r["references"][0] for r in load_dataset("e2e:tokenized", split="valid")], n)
    infill = []
    for ref in refs:
        words = ref.split()
        k = max(2, len(words) // 3)
        tg = ControlTarget(left=" ".join(words[:k]), right=" ".join(words[-k:]), middle=max(1, len(words) - 2 * k))
        if all(w in vocab for w in words[:k] + words[-k:]):
            infill.append(tg)
    return {
        "unconstrained": [ControlTarget()] * max(n // 2, 1),
        "semantic content": [ControlTarget(attribute=(r["field"], r["value"])) for r in attr_rows],
        "POS": [ControlTarget(pos=tuple(r["pos"][1 : 1 + len(r["text"].split())])) for r in pos_rows],
        "syntax spans": span_targets(n, seq_len),
        "length": [ControlTarget(length=10 + round(30 * i / max(n - 1, 1))) for i in range(n)],
        "POS + semantic content": [
            ControlTarget(attribute=(r["field"], r["value"]), pos=tuple(r["pos"][1 : 1 + len(r["text"].split())]))
            for r in comp_rows
        ],
        "infilling": infill,
    }


SCORERS = {
    "semantic content": score_attribute,
    "POS": score_pos,
    "syntax spans": score_span,
    "length": score_length,
    "POS + semantic content": score_attribute,
    "infilling": score_infill,
}


def ar_latency(lm, batch: int, tokens: int) -> dict[str, float]:  # noqa: ANN001
    """Seconds for the embedded AR model to generate ``tokens`` new tokens for ``batch`` prompts.

    ``generate`` (lmcontrol's loop) stops a row at EOS, so it is also timed with HF ``generate`` forced to
    exactly ``tokens`` new tokens per row (``min_new_tokens``), the like-for-like comparison.
    """
    from lmcontrol.generation import GenerationConfig, generate

    prompts = ["Describe a restaurant in one sentence."] * batch
    generate(lm, prompts[:1], GenerationConfig(max_new_tokens=4, chat=False))  # warm-up
    out = generate(lm, prompts, GenerationConfig(max_new_tokens=tokens, chat=False, temperature=1.0, seed=0))
    enc = lm.tokenizer(prompts, return_tensors="pt", padding=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        forced = lm.model.generate(
            **enc, min_new_tokens=tokens, max_new_tokens=tokens, do_sample=True, pad_token_id=lm.tokenizer.pad_token_id
        )
    return {
        "seconds": out.seconds,
        "new_tokens": out.new_tokens,
        "forced_seconds": time.perf_counter() - t0,
        "forced_new_tokens": int(forced.shape[0] * (forced.shape[1] - enc["input_ids"].shape[1])),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="artifacts/diffusion-lm-e2e")
    ap.add_argument("--classifier", default="artifacts/diffusion-lm-e2e-classifier")
    ap.add_argument("--span-classifier", default="artifacts/diffusion-lm-e2e-span-classifier")
    ap.add_argument("--prefix", default="artifacts/prefix-e2e", help="E2E prefix of the AR baseline and the judge")
    ap.add_argument("--out-json", type=Path, default=Path("benchmarks/diffusion_lm.json"))
    ap.add_argument("--figure", type=Path, default=Path("docs/img/diffusion_lm_bench.png"))
    ap.add_argument("--steps", type=int, default=100, help="diffusion steps for the control tasks")
    ap.add_argument("--samples", type=int, default=4, help="samples per target (one batch)")
    ap.add_argument("--targets", type=int, default=30, help="targets per task")
    ap.add_argument("--step-size", type=float, default=0.1)
    ap.add_argument("--fluency", type=float, default=0.01)
    ap.add_argument("--guidance-steps", type=int, default=3)
    ap.add_argument("--ar-prompt", default="name : restaurant\n", help="the fixed MR-free prompt of the AR baseline")
    ap.add_argument("--ar-max-new-tokens", type=int, default=64)
    ap.add_argument("--ar-temperature", type=float, default=0.7)
    ap.add_argument("--fudge-k", type=int, default=20)
    ap.add_argument("--fudge-weight", type=float, default=1.0)
    ap.add_argument("--judge", choices=("prefix", "bare"), default="prefix")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default="diffusion-lm,fudge-ar")
    ap.add_argument(
        "--tasks",
        default="unconstrained,semantic content,POS,syntax spans,length,"
        "POS + semantic content,infilling,sweep,latency,lmscore",
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.quick:
        args.targets, args.samples = 2, 2
    tasks = set(args.tasks.split(","))
    from lmcontrol.models import load_lm
    from lmcontrol.prefix.library import single_prefix_control

    pipe = DiffusionLMPipeline.from_pretrained(args.model, args.classifier, args.span_classifier)
    settings = SampleSettings(
        steps=args.steps, guidance_steps=args.guidance_steps, step_size=args.step_size, fluency=args.fluency
    )
    lm = load_lm(None)
    prefix = single_prefix_control(args.prefix, lm)
    gens: dict[str, Generator] = {
        "diffusion-lm": lambda n, target, seed: pipe(n, target=target, settings=settings, seed=seed),
        "fudge-ar": FudgeAR(lm, prefix, pipe, args),
    }
    gens = {k: v for k, v in gens.items() if k in args.methods.split(",")}
    rows: list[dict] = []
    samples: dict[str, list] = {}
    texts_by_row: dict[int, list[str]] = {}
    all_targets = build_targets(args, pipe.model.config.seq_len, pipe.vocab)
    for task, targets in all_targets.items():
        if task not in tasks:
            continue
        for method, gen in gens.items():
            res, sec = run_task(gen, targets, args.samples, 1000 if task == "unconstrained" else 0)
            row = {"task": task, "method": method, "targets": len(targets), "samples": sum(len(t) for _, t in res)}
            if task in SCORERS:
                row["success"] = SCORERS[task](res)
            if task == "POS + semantic content":
                row["pos_success"] = score_pos(res)
            if task == "unconstrained":  # scored against the attribute targets = the chance rate of success
                chance = [
                    attribute_hit(t, *tg.attribute)
                    for tg in all_targets["semantic content"]
                    for _, ts in res
                    for t in ts
                ]
                row["attribute_chance"] = _pct(chance)
            row["seconds"] = round(sec, 1)
            texts_by_row[len(rows)] = [t for _, ts in res for t in ts]
            samples[f"{task} / {method}"] = [{"target": _describe(tg), "texts": ts} for tg, ts in res[:4]]
            rows.append(row)
            log.info("%s", row)
    if "sweep" in tasks:
        sweep_targets = all_targets["semantic content"][: max(args.targets // 4, 1)]
        for steps in (50, 100, 200):
            s = SampleSettings(
                steps=steps, guidance_steps=args.guidance_steps, step_size=args.step_size, fluency=args.fluency
            )
            res, sec = run_task(lambda n, tg, sd, s=s: pipe(n, target=tg, settings=s, seed=sd), sweep_targets, 8, 0)
            rows.append(
                {
                    "task": f"sweep: semantic content @ {steps} steps",
                    "method": "diffusion-lm",
                    "targets": len(sweep_targets),
                    "samples": 8 * len(sweep_targets),
                    "success": score_attribute(res),
                    "seconds": round(sec, 1),
                    "seconds_per_batch": round(sec / len(sweep_targets), 2),
                }
            )
            log.info("%s", rows[-1])
    if "latency" in tasks:
        for steps in (50, 100, 200):
            _, sec = pipe.timed(8, settings=SampleSettings(steps=steps), seed=0)
            rows.append(
                {
                    "task": f"latency: Diffusion-LM 8x64 @ {steps} steps",
                    "method": "diffusion-lm",
                    "seconds": round(sec, 2),
                }
            )
        ar = ar_latency(lm, 8, 64)
        rows.append(
            {
                "task": "latency: SmolLM2-135M AR, lmcontrol generate (stops at EOS)",
                "method": "ar",
                "seconds": round(ar["seconds"], 2),
                "new_tokens": ar["new_tokens"],
            }
        )
        rows.append(
            {
                "task": "latency: SmolLM2-135M AR, forced 8x64 new tokens",
                "method": "ar",
                "seconds": round(ar["forced_seconds"], 2),
                "new_tokens": ar["forced_new_tokens"],
            }
        )
    if "lmscore" in tasks:
        scorer = LMScorer(lm, prefix if args.judge == "prefix" else None, args.ar_prompt)
        refs = [r["references"][0] for r in load_dataset("e2e:tokenized", split="valid")][:64]
        rows.append(
            {
                "task": "human E2E references",
                "method": "human",
                "samples": len(refs),
                "lm_score": round(scorer(refs), 2),
            }
        )
        for i, texts in texts_by_row.items():
            rows[i]["lm_score"] = round(scorer(texts), 2)
    meta = {
        "model": args.model,
        "classifier": args.classifier,
        "span_classifier": args.span_classifier,
        "prefix": args.prefix,
        "settings": vars(settings),
        "ar": {
            k: getattr(args, k) for k in ("ar_prompt", "ar_max_new_tokens", "ar_temperature", "fudge_k", "fudge_weight")
        },
        "judge": f"SmolLM2-135M + {args.prefix} after the AR prompt" if args.judge == "prefix" else "SmolLM2-135M",
        "samples_per_target": args.samples,
        "targets_per_task": args.targets,
        "threads": args.threads,
    }
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(
        json.dumps({"meta": _jsonable(meta), "rows": rows, "samples": samples}, indent=1, ensure_ascii=False)
    )
    print(f"{args.targets} targets per task, {args.samples} samples per target (CPU-sized run)")
    print(comparison_table(rows))
    print(table([r for r in rows if r["task"].startswith(("sweep", "latency"))]))
    plot(rows, args.figure)
    return 0


def _describe(target: ControlTarget) -> dict:
    return {k: v for k, v in vars(target).items() if v is not None and not (k == "middle" and not target.infilling)}


def _jsonable(obj):  # noqa: ANN001, ANN202
    return json.loads(json.dumps(obj, default=str))


def comparison_table(rows: list[dict]) -> str:
    """One line per task: Diffusion-LM vs FUDGE AR success and lm-score."""
    tasks = [
        r["task"] for r in rows if r.get("method") == "diffusion-lm" and not r["task"].startswith(("sweep", "latency"))
    ]
    lines = [
        "| task | Diffusion-LM success % | Diffusion-LM lm-score | FUDGE AR success % | FUDGE AR lm-score |",
        "|---|---|---|---|---|",
    ]
    by = {(r["task"], r.get("method")): r for r in rows}
    for task in tasks:
        cells = []
        for m in ("diffusion-lm", "fudge-ar"):
            r = by.get((task, m), {})
            succ = r.get("success", r.get("attribute_chance", ""))
            if "pos_success" in r:
                succ = f"attr {r['success']}, POS {r['pos_success']}"
            cells += [str(succ), str(r.get("lm_score", ""))]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    human = by.get(("human E2E references", "human"))
    if human:
        lines.append(f"| human E2E references | | {human['lm_score']} | | |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    cols = ["task", "method", "samples", "success", "seconds", "seconds_per_batch", "new_tokens"]
    cols = [c for c in cols if any(c in r for r in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    tasks = [t for t in SCORERS if any(r["task"] == t for r in rows)]
    for k, (method, color) in enumerate((("diffusion-lm", "tab:blue"), ("fudge-ar", "tab:orange"))):
        vals = [next((r["success"] for r in rows if r["task"] == t and r.get("method") == method), 0) for t in tasks]
        axes[0].barh([i + 0.4 * k for i in range(len(tasks))], vals, height=0.4, color=color, label=method)
    axes[0].set_yticks([i + 0.2 for i in range(len(tasks))], tasks)
    axes[0].set_xlabel("control success (%)")
    axes[0].set_xlim(0, 100)
    axes[0].invert_yaxis()
    axes[0].legend(loc="lower right")
    sweep = [r for r in rows if r["task"].startswith("sweep")]
    if sweep:
        steps = [int(re.search(r"@ (\d+)", r["task"]).group(1)) for r in sweep]
        axes[1].plot(steps, [r["success"] for r in sweep], "o-", label="success (%)")
        ax2 = axes[1].twinx()
        ax2.plot(steps, [r["seconds_per_batch"] for r in sweep], "s--", color="tab:red")
        ax2.set_ylabel("seconds per batch of 8", color="tab:red")
        axes[1].set_xlabel("diffusion steps")
        axes[1].set_ylabel("semantic-content success (%)")
        axes[1].set_xticks(steps)
        axes[1].set_title("Diffusion-LM steps sweep")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
