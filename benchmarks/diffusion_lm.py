"""Diffusion-LM benchmark (issue 7): control success and fluency per task, steps sweep, infilling, latency.

    python benchmarks/diffusion_lm.py --out runs/bench/diffusion-lm            # full run (~30 min on 1 core)
    python benchmarks/diffusion_lm.py --quick                                   # smoke run

Tasks and metrics (targets from the Diffusion-LM repo, ``load_dataset("e2e:control", ...)``):

- semantic content: ``field : value`` targets; success = the (tokenized) value occurs in the sample
  (case-insensitive, word boundaries; familyFriendly yes/no = a family/kid/child-friendly mention without/with
  a negation). The paper scores the same way (exact match of the value).
- POS: success = word-level accuracy of spaCy's UPOS tags of the sample against the target sequence
  (positions beyond the shorter of the two count as misses).
- length: success = the sample has exactly the target number of words.
- composition: semantic content + POS (``pos_attr`` targets); both metrics are reported.
- lm-score: corpus perplexity of the samples under the embedded SmolLM2-135M (no E2E-tuned AR model exists
  in the repo yet), so it is a *relative* fluency figure; human E2E references are scored the same way.

Writes ``results.json``, ``samples.json`` and ``diffusion_lm.png`` to ``--out`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
from pathlib import Path

import torch

from lmcontrol.data import load_dataset
from lmcontrol.diffusion_lm.classifiers import pos_tag
from lmcontrol.diffusion_lm.control import ControlTarget, DiffusionLMPipeline, SampleSettings

log = logging.getLogger("bench.diffusion_lm")
FAMILY = re.compile(r"(family|kid|child)[\w\s-]*friendly|\bfamilies\b|\bchildren\b|\bkids\b", re.I)
NEGATION = re.compile(r"\b(not|no|n't|non)\b", re.I)


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
    return [
        sum(a == b for a, b in zip(tags, target, strict=False)) / max(len(tags), len(target), 1)
        for tags in tagged
    ]


class LMScorer:
    """Corpus perplexity under the embedded LM (loaded once)."""

    def __init__(self) -> None:
        from lmcontrol.models import load_lm

        self.lm = load_lm(None)

    def __call__(self, texts: list[str]) -> float:
        from lmcontrol.eval.fluency import continuation_nll

        texts = [t for t in texts if t.strip()]
        if not texts:
            return float("nan")
        scored = continuation_nll(self.lm, [""] * len(texts), texts, batch_size=16)
        nll, n = sum(s for s, _ in scored), sum(k for _, k in scored)
        return math.exp(nll / n) if n else float("nan")


# --- tasks -------------------------------------------------------------------------------------------------
def run_task(pipe, targets, samples, settings, seed) -> tuple[list[tuple[ControlTarget, list[str]]], float]:
    """Sample ``samples`` sentences per target; returns (target, texts) pairs and seconds."""
    out, t0 = [], time.perf_counter()
    for i, target in enumerate(targets):
        out.append((target, pipe(samples, target=target, settings=settings, seed=seed + i)))
    return out, time.perf_counter() - t0


def score_attribute(results) -> float:
    hits = [attribute_hit(t, *target.attribute) for target, texts in results for t in texts]
    return 100.0 * sum(hits) / max(len(hits), 1)


def score_pos(results) -> float:
    accs = [a for target, texts in results for a in pos_accuracy(texts, list(target.pos))]
    return 100.0 * sum(accs) / max(len(accs), 1)


def score_length(results) -> float:
    hits = [len(t.split()) == target.length for target, texts in results for t in texts]
    return 100.0 * sum(hits) / max(len(hits), 1)


def every(rows: list, n: int) -> list:
    """``n`` rows spread evenly over ``rows``."""
    step = max(len(rows) // n, 1)
    return rows[::step][:n]


def ar_latency(batch: int, tokens: int) -> dict[str, float]:
    """Seconds for the embedded AR model to generate ``tokens`` new tokens for ``batch`` prompts.

    ``generate`` (lmcontrol's loop) stops a row at EOS, so it is also timed with HF ``generate`` forced to
    exactly ``tokens`` new tokens per row (``min_new_tokens``), the like-for-like comparison.
    """
    from lmcontrol.generation import GenerationConfig, generate
    from lmcontrol.models import load_lm

    lm = load_lm(None)
    prompts = ["Describe a restaurant in one sentence."] * batch
    generate(lm, prompts[:1], GenerationConfig(max_new_tokens=4, chat=False))  # warm-up
    out = generate(lm, prompts, GenerationConfig(max_new_tokens=tokens, chat=False, temperature=1.0, seed=0))
    enc = lm.tokenizer(prompts, return_tensors="pt", padding=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        forced = lm.model.generate(
            **enc,
            min_new_tokens=tokens,
            max_new_tokens=tokens,
            do_sample=True,
            pad_token_id=lm.tokenizer.pad_token_id,
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
    ap.add_argument("--out", type=Path, default=Path("runs/bench/diffusion-lm"))
    ap.add_argument("--steps", type=int, default=100, help="diffusion steps for the control tasks")
    ap.add_argument("--samples", type=int, default=8, help="samples per target (one batch)")
    ap.add_argument("--targets", type=int, default=16, help="targets per task")
    ap.add_argument("--step-size", type=float, default=0.1)
    ap.add_argument("--fluency", type=float, default=0.01)
    ap.add_argument("--guidance-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--tasks", default="unconstrained,attribute,pos,length,compose,infill,sweep,latency,lmscore"
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.quick:
        args.targets, args.samples = 2, 4
    tasks = set(args.tasks.split(","))
    pipe = DiffusionLMPipeline.from_pretrained(args.model, args.classifier)
    settings = SampleSettings(
        steps=args.steps, guidance_steps=args.guidance_steps, step_size=args.step_size, fluency=args.fluency
    )
    rows: list[dict] = []
    samples: dict[str, list] = {}
    texts_by_task: dict[str, list[str]] = {}

    def record(task: str, results, seconds: float, **metrics) -> None:
        texts = [t for _, ts in results for t in ts]
        texts_by_task[task] = texts
        samples[task] = [{"target": _describe(tg), "texts": ts} for tg, ts in results[:4]]
        rows.append({"task": task, "samples": len(texts), "seconds": round(seconds, 1), **metrics})
        log.info("%s: %s", task, rows[-1])

    attr_rows = every(load_dataset("e2e:control", split="attribute"), args.targets)
    attr_targets = [ControlTarget(attribute=(r["field"], r["value"])) for r in attr_rows]
    if "unconstrained" in tasks:
        n_batches = max(args.targets // 2, 1)
        res, sec = run_task(pipe, [ControlTarget()] * n_batches, args.samples, settings, 1000)
        # unconstrained samples scored against the attribute targets = the chance rate of "success"
        chance = [attribute_hit(t, *tg.attribute) for tg in attr_targets for _, ts in res for t in ts]
        record(
            "unconstrained", res, sec, attribute_chance=round(100.0 * sum(chance) / max(len(chance), 1), 1)
        )
    if "attribute" in tasks:
        res, sec = run_task(pipe, attr_targets, args.samples, settings, 0)
        record("semantic content", res, sec, success=round(score_attribute(res), 1))
    if "pos" in tasks:
        pos_rows = every(load_dataset("e2e:control", split="pos"), args.targets)
        targets = [ControlTarget(pos=tuple(r["pos"][1 : 1 + len(r["text"].split())])) for r in pos_rows]
        res, sec = run_task(pipe, targets, args.samples, settings, 0)
        record("POS", res, sec, success=round(score_pos(res), 1))
    if "length" in tasks:
        lengths = [10 + round(30 * i / max(args.targets - 1, 1)) for i in range(args.targets)]
        res, sec = run_task(pipe, [ControlTarget(length=n) for n in lengths], args.samples, settings, 0)
        record("length", res, sec, success=round(score_length(res), 1))
    if "compose" in tasks:
        comp_rows = every(load_dataset("e2e:control", split="pos_attr"), args.targets)
        targets = [
            ControlTarget(
                attribute=(r["field"], r["value"]), pos=tuple(r["pos"][1 : 1 + len(r["text"].split())])
            )
            for r in comp_rows
        ]
        res, sec = run_task(pipe, targets, args.samples, settings, 0)
        record(
            "POS + semantic content",
            res,
            sec,
            success=round(score_attribute(res), 1),
            pos_success=round(score_pos(res), 1),
        )
    if "infill" in tasks:
        refs = every([r["references"][0] for r in load_dataset("e2e:tokenized", split="valid")], args.targets)
        targets = []
        for ref in refs:
            words = ref.split()
            k = max(2, len(words) // 3)
            targets.append(
                ControlTarget(
                    left=" ".join(words[:k]), right=" ".join(words[-k:]), middle=max(1, len(words) - 2 * k)
                )
            )
        targets = [t for t in targets if all(w in pipe.vocab for w in f"{t.left} {t.right}".split())]
        res, sec = run_task(pipe, targets, min(args.samples, 4), settings, 0)
        kept = [all(t.startswith(tg.left) and t.endswith(tg.right) for t in ts) for tg, ts in res]
        record("infilling", res, sec, context_kept=round(100.0 * sum(kept) / max(len(kept), 1), 1))
    if "sweep" in tasks:
        sweep_targets = attr_targets[: max(args.targets // 2, 1)]
        for steps in (50, 100, 200):
            s = SampleSettings(
                steps=steps,
                guidance_steps=args.guidance_steps,
                step_size=args.step_size,
                fluency=args.fluency,
            )
            res, sec = run_task(pipe, sweep_targets, args.samples, s, 0)
            record(
                f"sweep: semantic content @ {steps} steps",
                res,
                sec,
                success=round(score_attribute(res), 1),
                seconds_per_batch=round(sec / len(sweep_targets), 2),
            )
    if "latency" in tasks:
        for steps in (50, 100, 200):
            _, sec = pipe.timed(8, settings=SampleSettings(steps=steps), seed=0)
            rows.append({"task": f"latency: Diffusion-LM 8x64 @ {steps} steps", "seconds": round(sec, 2)})
        ar = ar_latency(8, 64)
        rows.append(
            {
                "task": "latency: SmolLM2-135M AR, lmcontrol generate (stops at EOS)",
                "seconds": round(ar["seconds"], 2),
                "new_tokens": ar["new_tokens"],
            }
        )
        rows.append(
            {
                "task": "latency: SmolLM2-135M AR, forced 8x64 new tokens",
                "seconds": round(ar["forced_seconds"], 2),
                "new_tokens": ar["forced_new_tokens"],
            }
        )
    if "lmscore" in tasks:
        scorer = LMScorer()
        refs = [r["references"][0] for r in load_dataset("e2e:tokenized", split="valid")][:64]
        rows.append(
            {"task": "human E2E references", "samples": len(refs), "lm_score": round(scorer(refs), 2)}
        )
        for row in rows:
            if row["task"] in texts_by_task:
                row["lm_score"] = round(scorer(texts_by_task[row["task"]]), 2)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": args.model,
        "classifier": args.classifier,
        "settings": vars(settings) | {},
        "samples_per_target": args.samples,
        "targets_per_task": args.targets,
        "threads": args.threads,
    }
    (args.out / "results.json").write_text(json.dumps({"meta": _jsonable(meta), "rows": rows}, indent=1))
    (args.out / "samples.json").write_text(json.dumps(samples, indent=1, ensure_ascii=False))
    print(table(rows))
    plot(rows, args.out / "diffusion_lm.png")
    return 0


def _describe(target: ControlTarget) -> dict:
    return {
        k: v
        for k, v in vars(target).items()
        if v is not None and not (k == "middle" and not target.infilling)
    }


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def table(rows: list[dict]) -> str:
    cols = [
        "task",
        "samples",
        "success",
        "pos_success",
        "attribute_chance",
        "context_kept",
        "lm_score",
        "seconds",
    ]
    cols = [c for c in cols if any(c in r for r in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ctrl = [r for r in rows if "success" in r and not r["task"].startswith("sweep")]
    axes[0].barh([r["task"] for r in ctrl], [r["success"] for r in ctrl], color="tab:blue")
    axes[0].set_xlabel("control success (%)")
    axes[0].set_xlim(0, 100)
    sweep = [r for r in rows if r["task"].startswith("sweep")]
    if sweep:
        steps = [int(re.search(r"@ (\d+)", r["task"]).group(1)) for r in sweep]
        axes[1].plot(steps, [r["success"] for r in sweep], "o-", label="success (%)")
        ax2 = axes[1].twinx()
        ax2.plot(
            steps, [r["seconds_per_batch"] for r in sweep], "s--", color="tab:red", label="s / batch of 8"
        )
        ax2.set_ylabel("seconds per batch of 8", color="tab:red")
        axes[1].set_xlabel("diffusion steps")
        axes[1].set_ylabel("semantic-content success (%)")
        axes[1].set_xticks(steps)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
