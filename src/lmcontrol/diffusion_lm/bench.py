"""``lmcontrol bench diffusion-lm``: control success and fluency per task, Diffusion-LM vs a FUDGE AR baseline
(Li et al. 2022 §7), with a diffusion-steps sweep; every method run side by side by the bench harness.

    lmcontrol bench diffusion-lm --n 210 --samples 4        # 30 targets per task (the default loader)
    lmcontrol bench diffusion-lm --prompts targets.jsonl     # your own targets, one per row

Each bench "prompt" is a control target in ``targets.target_text`` form, e.g. ``attribute=food=Italian``,
``pos=PROPN AUX DET NOUN PUNCT``, ``span=3,5``, ``length=12``, ``left=The Vaults is|right=in the city centre .|
middle=6`` (``id=K`` tells repeated targets apart); a ``--prompts`` file holds such lines in its ``prompt``
field. The default loader takes ``n // 7`` targets per task from the Diffusion-LM repo's files
(``load_dataset("e2e:control", ...)``) and E2E dev references (infilling).

Methods: ``diffusion-lm`` (``artifacts/diffusion-lm-e2e`` with plug-and-play control, 100 steps; ``-50`` /
``-200`` for the steps sweep) and ``fudge-ar`` (SmolLM2-135M with the committed E2E prefix after one fixed MR-free
prompt, ``AR_PROMPT``, and FUDGE from the *same* classifiers at t = 0; infilling: the left context ends the
prompt). AR outputs are re-tokenised into E2E words, so both methods are scored alike.

Metrics (registered by the plugin): ``e2e-control`` — success per task: semantic content = the value occurs in
the sample (familyFriendly: a family mention without / with a negation), the paper's exact match; POS = word
accuracy of spaCy's UPOS tags against the target; syntax span = the span is a spaCy subtree span of the sample;
length = exactly n words; infilling = both contexts kept; unconstrained samples give the chance rate of the
semantic-content targets. ``e2e-lm-score`` — corpus perplexity under a judge that neither method trained: the
bare SmolLM2-135M (no E2E prefix, chat template off; ``--judge`` picks another LM) after ``JUDGE_PROMPT``
(``lmcontrol.scoring.score``). ``finalize`` adds the judge's perplexity of 256 human E2E dev references, the yardstick.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmcontrol.bench.suite import BenchMethod, BenchSuite
from lmcontrol.diffusion_lm.config import DEFAULT_CLASSIFIER_DIR, DEFAULT_MODEL_DIR, DEFAULT_SPAN_CLASSIFIER_DIR
from lmcontrol.generation import GenerationConfig
from lmcontrol.settings import ARTIFACTS_DIR

if TYPE_CHECKING:
    from lmcontrol.controls import Control
    from lmcontrol.diffusion_lm.pipeline import DiffusionLMPipeline
    from lmcontrol.diffusion_lm.targets import ControlTarget
    from lmcontrol.generation import GenerationOutput
    from lmcontrol.models import LanguageModel

PREFIX_DIR = ARTIFACTS_DIR / "prefix-e2e"
AR_PROMPT = "name : restaurant\n"  # the fixed MR-free prompt of the AR baseline
JUDGE_PROMPT = "A short description of a restaurant:\n"  # what the fluency judge reads before each sample
HUMAN_REFERENCES = 256  # E2E dev references scored as the fluency yardstick
FUDGE_K, FUDGE_WEIGHT = 20, 1.0
TASKS = ("unconstrained", "attribute", "pos", "span", "length", "attribute+pos", "infill")
FAMILY = re.compile(r"(family|kid|child)[\w\s-]*friendly|\bfamilies\b|\bchildren\b|\bkids\b", re.I)
NEGATION = re.compile(r"\b(not|no|n't|non)\b", re.I)
Row = dict[str, Any]


# --- targets ------------------------------------------------------------------------------------------------
def task_of(target: ControlTarget) -> str:
    """The benchmark task a target belongs to (one of ``TASKS``)."""
    if target.infilling:
        return "infill"
    if target.attribute is not None and target.pos is not None:
        return "attribute+pos"
    for name in ("attribute", "pos", "span", "length"):
        if getattr(target, name) is not None:
            return name
    return "unconstrained"


def every(rows: list, n: int, split: str = "test") -> list:
    """``n`` rows spread evenly over ``rows``; ``split="valid"`` takes the rows half-way between the reported
    (``"test"``) ones, so tuning never sees a reported target."""
    step = max(len(rows) // n, 1)
    offset = step // 2 if split == "valid" and step > 1 else 0
    return rows[offset::step][:n]


def span_targets(n: int, seq_len: int = 64, split: str = "test") -> list[ControlTarget]:
    """Paper span targets that are constituents of their own sentence under our definition (>= 2 words)."""
    from lmcontrol.data import load_dataset
    from lmcontrol.diffusion_lm.spans import parse_spans
    from lmcontrol.diffusion_lm.targets import ControlTarget

    rows = load_dataset("e2e:control", split="spans")
    parsed = parse_spans([r["text"].split() for r in rows])
    kept = []
    for row, spans in zip(rows, parsed, strict=True):
        i, j = int(row["spans"][0][0]), int(row["spans"][0][1])
        if i < j <= seq_len - 3 and (i, j) in spans:
            kept.append(ControlTarget(span=(i, j)))
    return every(kept, n, split)


def default_targets(
    per_task: int, vocab: Sequence[str] | None = None, split: str = "test"
) -> dict[str, list[ControlTarget]]:
    """``per_task`` targets per task from the Diffusion-LM repo's target files and E2E dev references;
    ``split="valid"`` gives disjoint ones for tuning (``every``)."""
    from lmcontrol.data import load_dataset
    from lmcontrol.diffusion_lm.targets import ControlTarget

    n = per_task
    attr_rows = every(load_dataset("e2e:control", split="attribute"), n, split)
    pos_rows = every(load_dataset("e2e:control", split="pos"), n, split)
    comp_rows = every(load_dataset("e2e:control", split="pos_attr"), n, split)
    refs = every([r["references"][0] for r in load_dataset("e2e:tokenized", split="valid")], n, split)
    known = set(vocab) if vocab is not None else None
    infill = []
    for ref in refs:
        words = ref.split()
        k = max(2, len(words) // 3)
        if known is None or all(w in known for w in words[:k] + words[-k:]):
            infill.append(
                ControlTarget(left=" ".join(words[:k]), right=" ".join(words[-k:]), middle=max(1, len(words) - 2 * k))
            )
    return {
        "unconstrained": [ControlTarget()] * max(n // 2, 1),
        "attribute": [ControlTarget(attribute=(r["field"], r["value"])) for r in attr_rows],
        "pos": [ControlTarget(pos=tuple(r["pos"][1 : 1 + len(r["text"].split())])) for r in pos_rows],
        "span": span_targets(n, split=split),
        "length": [ControlTarget(length=10 + round(30 * i / max(n - 1, 1)) + (split == "valid")) for i in range(n)],
        "attribute+pos": [
            ControlTarget(attribute=(r["field"], r["value"]), pos=tuple(r["pos"][1 : 1 + len(r["text"].split())]))
            for r in comp_rows
        ],
        "infill": infill,
    }


def target_rows(n: int, split: str = "test", tasks: Sequence[str] = TASKS) -> list[Row]:
    """The suite's default prompts: ``n // len(tasks)`` targets per task as ``target_text`` lines (unique)."""
    from lmcontrol.diffusion_lm.targets import target_text

    vocab = pipeline().vocab.words
    rows, seen = [], set()
    per_task = default_targets(max(n // len(tasks), 1), vocab, split)
    for targets in (per_task[task] for task in tasks):
        for i, target in enumerate(targets):
            text = target_text(target)
            key = target_text(target, i) if text in seen or task_of(target) == "unconstrained" else text
            seen.add(key)
            rows.append({"prompt": key})
    return rows


# --- the two generators --------------------------------------------------------------------------------------
@functools.cache
def pipeline() -> DiffusionLMPipeline:
    """The committed Diffusion-LM with its attribute/POS and span classifiers (loaded once)."""
    from lmcontrol.diffusion_lm.pipeline import DiffusionLMPipeline

    return DiffusionLMPipeline.from_pretrained(DEFAULT_MODEL_DIR, DEFAULT_CLASSIFIER_DIR, DEFAULT_SPAN_CLASSIFIER_DIR)


def _output(prompts: list[str], texts: list[str], ids: list[list[int]], seconds: float) -> GenerationOutput:
    from lmcontrol.generation import GenerationOutput

    return GenerationOutput(prompts, texts, ids, seconds, seconds, sum(len(i) for i in ids))


def diffusion_lm_run(
    steps: int, **guidance: float | int
) -> Callable[[LanguageModel, list[str], GenerationConfig], GenerationOutput]:
    """``run(lm, targets, config)``: one Diffusion-LM sample per target (seed: the harness's + row index);
    ``guidance`` overrides ``SampleSettings`` fields (``step_size``, ``fluency``, ``mbr``)."""

    def run(lm: LanguageModel, prompts: list[str], config: GenerationConfig) -> GenerationOutput:
        from lmcontrol.diffusion_lm.pipeline import SampleSettings
        from lmcontrol.diffusion_lm.targets import parse_target

        del lm  # the AR model is not used
        pipe, settings = pipeline(), SampleSettings(steps=steps, **guidance)
        t0, texts = time.perf_counter(), []
        for j, text in enumerate(prompts):
            texts += pipe(1, target=parse_target(text), settings=settings, seed=(config.seed or 0) + j)
        ids = [pipe.vocab.ids(t.split()) for t in texts]
        return _output(prompts, texts, ids, time.perf_counter() - t0)

    return run


_PREFIXES: dict[int, Control] = {}


def _prefix(lm: LanguageModel) -> Control:
    """The committed E2E prefix for ``lm`` (built once per model)."""
    from lmcontrol.controls import build_control, parse_control_spec

    if id(lm) not in _PREFIXES:
        _PREFIXES[id(lm)] = build_control(parse_control_spec(f"prefix:{PREFIX_DIR}"), lm)
    return _PREFIXES[id(lm)]


def fudge_ar(lm: LanguageModel, prompts: list[str], config: GenerationConfig) -> GenerationOutput:
    """SmolLM2 + the E2E prefix + FUDGE from the Diffusion-LM classifiers, one target at a time; E2E words out."""
    from lmcontrol.diffusion_lm.control import DiffusionClassifierScorer, FudgeControl, e2e_words
    from lmcontrol.diffusion_lm.targets import ControlTarget, parse_target
    from lmcontrol.generation import generate

    pipe, prefix = pipeline(), _prefix(lm)
    t0, texts, ids = time.perf_counter(), [], []
    for text in prompts:
        target = parse_target(text)
        controls, prompt, left = [prefix], AR_PROMPT, ""
        if target.infilling:  # no right-context conditioning: the left context ends the prompt
            left = target.left or ""
            prompt += left
        elif target != ControlTarget():
            scorer = DiffusionClassifierScorer(pipe.model, target, pipe.classifier, pipe.span_classifier)
            controls.append(
                FudgeControl(scorer, top_k=FUDGE_K, weight=FUDGE_WEIGHT, always_eos=target.length is not None)
            )
        out = generate(lm, [prompt], config, controls)
        words = " ".join(e2e_words(out.texts[0].strip().split("\n")[0]))
        texts.append(f"{left} {words}".strip() if left else words)
        ids += out.token_ids
    return _output(prompts, texts, ids, time.perf_counter() - t0)


# --- metrics ------------------------------------------------------------------------------------------------
def attribute_hit(text: str, field: str, value: str) -> bool:
    """Does ``text`` express ``field = value``? (exact value match; see the module docstring)."""
    if field == "familyFriendly":
        mentioned, negated = bool(FAMILY.search(text)), bool(NEGATION.search(text))
        return mentioned and (negated if value.lower() == "no" else not negated)
    return re.search(rf"(?<!\w){re.escape(value.lower())}(?!\w)", text.lower()) is not None


def pos_accuracy(texts: list[str], targets: list[Sequence[str]]) -> list[float]:
    """Word-level agreement of spaCy tags with each target (divided by the longer length)."""
    from lmcontrol.diffusion_lm.classifiers import pos_tag

    tagged = pos_tag([t.split() for t in texts])
    return [
        sum(a == b for a, b in zip(tags, want, strict=False)) / max(len(tags), len(want), 1)
        for tags, want in zip(tagged, targets, strict=True)
    ]


def _pct(hits: Sequence[float]) -> float:
    return round(100.0 * sum(hits) / len(hits), 1) if hits else float("nan")


def _se(hits: Sequence[float]) -> float:
    """Standard error (percentage points) of the mean of per-sample successes in [0, 1]."""
    n = len(hits)
    if n < 2:
        return float("nan")
    mean = sum(hits) / n
    return round(100.0 * math.sqrt(sum((h - mean) ** 2 for h in hits) / (n - 1) / n), 1)


def _put(out: dict[str, float], key: str, hits: Sequence[float]) -> None:
    out[key], out[f"{key}_se"] = _pct(hits), _se(hits)


def control_success(rows: list[Row], ctx: Any = None) -> dict[str, float]:
    """``e2e-control``: success (%) per task of one method's rows (``prompt`` = target text)."""
    from lmcontrol.diffusion_lm.spans import span_hits
    from lmcontrol.diffusion_lm.targets import parse_target

    by_task: dict[str, list[tuple[ControlTarget, str]]] = {t: [] for t in TASKS}
    for r in rows:
        target = parse_target(r["prompt"])
        by_task[task_of(target)].append((target, r["continuation"]))
    out: dict[str, float] = {}
    for task in ("attribute", "attribute+pos"):
        if by_task[task]:
            _put(out, f"success_{task}", [attribute_hit(x, *tg.attribute) for tg, x in by_task[task]])
    for task in ("pos", "attribute+pos"):
        if by_task[task]:
            acc = pos_accuracy([x for _, x in by_task[task]], [tg.pos for tg, _ in by_task[task]])
            _put(out, "success_pos" if task == "pos" else "pos_success_attribute+pos", acc)
    if by_task["span"]:
        _put(out, "success_span", [h for tg, x in by_task["span"] for h in span_hits([x], tg.span)])
    if by_task["length"]:
        _put(out, "success_length", [len(x.split()) == tg.length for tg, x in by_task["length"]])
    if by_task["infill"]:
        _put(out, "success_infill", [x.startswith(tg.left) and x.endswith(tg.right) for tg, x in by_task["infill"]])
    if by_task["unconstrained"] and by_task["attribute"]:  # chance rate of the semantic-content targets
        chance = [
            attribute_hit(x, *tg.attribute) for tg, _ in by_task["attribute"] for _, x in by_task["unconstrained"]
        ]
        out["attribute_chance"] = _pct(chance)
    return out


def judge_perplexity(lm: LanguageModel, prefix: Control | None, prompt: str, texts: list[str]) -> float:
    """Corpus perplexity exp(−Σ log p / #tokens) of ``texts`` after ``prompt`` under ``lm`` (+ ``prefix``)."""
    return judge_perplexity_se(lm, prefix, prompt, texts)[0]


def judge_perplexity_se(
    lm: LanguageModel, prefix: Control | None, prompt: str, texts: list[str], resamples: int = 200
) -> tuple[float, float]:
    """(corpus perplexity, its bootstrap standard error over texts) of ``texts`` after ``prompt``."""
    from lmcontrol.scoring import score

    texts = [t for t in texts if t.strip()]
    if not texts:
        return float("nan"), float("nan")
    out = score(lm, [prompt] * len(texts), texts, [prefix] if prefix is not None else [], chat=False)
    logp, count = out.sum_logprobs.double().cpu(), out.num_tokens.double().cpu()
    ppl = math.exp(-float(logp.sum()) / float(count.sum())) if float(count.sum()) else float("nan")
    if len(texts) < 2:
        return ppl, float("nan")
    import torch

    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(texts), (resamples, len(texts)), generator=g)
    boot = torch.exp(-logp[idx].sum(1) / count[idx].sum(1).clamp_min(1))
    return ppl, float(boot.std())


def lm_score(rows: list[Row], ctx: Any = None) -> dict[str, float]:
    """``e2e-lm-score``: the judge's corpus perplexity of one method's samples, overall and per task (module
    docstring)."""
    from lmcontrol.diffusion_lm.targets import parse_target
    from lmcontrol.models import load_lm

    lm = load_lm(getattr(ctx, "judge", None))
    by_task: dict[str, list[str]] = {}
    for r in rows:
        by_task.setdefault(task_of(parse_target(r["prompt"])), []).append(r["continuation"])
    out: dict[str, float] = {}
    for task, texts in [("", [r["continuation"] for r in rows]), *by_task.items()]:
        key = f"lm_score_{task}" if task else "lm_score"
        ppl, se = judge_perplexity_se(lm, None, JUDGE_PROMPT, texts)
        out[key], out[f"{key}_se"] = round(ppl, 2), round(se, 2)
    return out


def add_human_references(results: dict[str, Any], out: Path) -> dict[str, Any]:
    """``finalize``: the judge's perplexity of 256 human E2E dev references, next to the methods' lm-scores."""
    from lmcontrol.data import load_dataset
    from lmcontrol.models import load_lm

    del out
    if "e2e-lm-score" in results.get("metrics", []):
        lm = load_lm(None)
        refs = [r["references"][0] for r in load_dataset("e2e:tokenized", split="valid")][:HUMAN_REFERENCES]
        ppl, se = judge_perplexity_se(lm, None, JUDGE_PROMPT, refs)
        results["human_references_lm_score"], results["human_references_lm_score_se"] = round(ppl, 2), round(se, 2)
    if any(name.startswith("diffusion-lm") for name in results.get("methods", {})):
        results["latency_batch8"] = batch_latency()
    return results


def batch_latency(batch: int = 8, tokens: int = 64, repeats: int = 3) -> dict[str, float]:
    """Seconds for one batch of ``batch`` × ``tokens``, median of ``repeats``, in this process: Diffusion-LM
    unconstrained at 50/100/200 steps, and the AR model (SmolLM2-135M, transformers' ``generate`` with its KV
    cache) forced to exactly ``tokens`` new tokens; plus each Diffusion-LM row's ratio to AR (< 1 = faster)."""
    import statistics

    import torch

    from lmcontrol.diffusion_lm.pipeline import SampleSettings
    from lmcontrol.models import load_lm

    pipe, lm = pipeline(), load_lm(None)

    def median_seconds(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return round(statistics.median(times), 3)

    enc = lm.tokenizer([AR_PROMPT] * batch, return_tensors="pt").to(lm.model.device)

    def ar() -> None:
        with torch.no_grad():
            lm.model.generate(
                **enc, do_sample=True, temperature=0.7, min_new_tokens=tokens, max_new_tokens=tokens,
                pad_token_id=lm.tokenizer.pad_token_id,
            )  # fmt: skip

    out = {"ar_hf_generate": median_seconds(ar)}
    for steps in (50, 100, 200):
        seconds = median_seconds(lambda s=steps: pipe(batch, settings=SampleSettings(steps=s)))
        out[f"diffusion_lm_{steps}"] = seconds
        out[f"diffusion_lm_{steps}_vs_ar"] = round(seconds / out["ar_hf_generate"], 3)
    return out


def make_suite() -> BenchSuite:
    return BenchSuite(
        name="diffusion-lm",
        prompts=target_rows,
        methods=(
            BenchMethod("fudge-ar", run=fudge_ar, help="SmolLM2 + E2E prefix + FUDGE by the same classifiers"),
            BenchMethod("diffusion-lm", run=diffusion_lm_run(100), help="Diffusion-LM with plug-and-play control"),
            BenchMethod("diffusion-lm-50", run=diffusion_lm_run(50), help="the steps sweep: 50 steps"),
            BenchMethod("diffusion-lm-200", run=diffusion_lm_run(200), help="the steps sweep: 200 steps"),
            BenchMethod(
                "diffusion-lm-mbr4", run=diffusion_lm_run(100, mbr=4), help="100 steps, MBR over 4 candidates"
            ),
        ),
        metrics=("e2e-control", "e2e-lm-score"),
        generation=GenerationConfig(max_new_tokens=64, temperature=0.7, chat=False),
        batch_size=8,
        finalize=add_human_references,
    )


# --- tuning the guidance on validation targets ---------------------------------------------------------------
GUIDANCE_TASKS = ("attribute", "pos", "span", "attribute+pos")
STEP_SIZES, FLUENCY_WEIGHTS = (0.05, 0.1, 0.2, 0.4), (0.0, 0.01, 0.05)


def validation_rows(n: int) -> list[Row]:
    """Validation targets of the guided tasks, disjoint from the reported ones (``every(..., "valid")``)."""
    return target_rows(n, split="valid", tasks=GUIDANCE_TASKS)


def make_guidance_suite() -> BenchSuite:
    """``lmcontrol bench diffusion-lm-guidance``: the guidance step size η × fluency weight λ grid on validation
    targets (the defaults in ``SampleSettings`` were picked from it), 100 steps."""
    methods = tuple(
        BenchMethod(
            f"eta{eta:g}-lambda{lam:g}",
            run=diffusion_lm_run(100, step_size=eta, fluency=lam),
            help=f"Diffusion-LM, guidance step size {eta:g}, fluency weight {lam:g}",
        )
        for eta in STEP_SIZES
        for lam in FLUENCY_WEIGHTS
    )
    return BenchSuite(
        name="diffusion-lm-guidance",
        prompts=validation_rows,
        methods=methods,
        metrics=("e2e-control", "e2e-lm-score"),
        generation=GenerationConfig(max_new_tokens=64, temperature=0.7, chat=False),
        batch_size=8,
    )


# --- unconstrained fluency -----------------------------------------------------------------------------------
def unconstrained_rows(n: int) -> list[Row]:
    """``n`` unconstrained targets (each a sample of its own)."""
    from lmcontrol.diffusion_lm.targets import ControlTarget, target_text

    return [{"prompt": target_text(ControlTarget(), i)} for i in range(max(n, 1))]


def make_fluency_suite() -> BenchSuite:
    """``lmcontrol bench diffusion-lm-fluency``: judge perplexity of unconstrained samples at 100 and 200 steps and
    with MBR over 4 candidates, next to the human references (``finalize``)."""
    return BenchSuite(
        name="diffusion-lm-fluency",
        prompts=unconstrained_rows,
        methods=(
            BenchMethod("diffusion-lm", run=diffusion_lm_run(100), help="100 ancestral steps"),
            BenchMethod("diffusion-lm-200", run=diffusion_lm_run(200), help="200 ancestral steps"),
            BenchMethod("diffusion-lm-mbr4", run=diffusion_lm_run(100, mbr=4), help="100 steps, MBR over 4"),
        ),
        metrics=("e2e-lm-score",),
        generation=GenerationConfig(max_new_tokens=64, temperature=0.7, chat=False),
        batch_size=8,
        finalize=add_human_references,
    )
