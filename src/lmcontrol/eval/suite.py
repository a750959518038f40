"""The metric registry: a metric name -> a function over rows, aggregated per group (method).

A row is a dict with ``prompt`` and ``continuation`` (plus optional ``method``, ``reference``, ``seconds``,
``tokens``, ``topic``, ``sample``). ``evaluate(groups, ["ppl", "dist"])`` scores each group and returns
``{group: {column: value}}``; one metric may fill several columns (``dist`` -> dist-1, dist-2, dist-3).
A metric may take one argument after a colon: ``reward:harmless`` (which reward), ``mauve:lm`` (which
features). Unknown names raise an ``LMControlError`` listing the known ones, before any model is loaded. The table is
``lmcontrol.registry.METRICS`` (a plugin or an installed package may add metrics).

Adding a metric::

    from lmcontrol.eval.suite import register_metric
    register_metric("length", lambda rows, ctx: {"length": mean(len(r["continuation"]) for r in rows)},
                    "mean characters per continuation")
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

from lmcontrol import LMControlError
from lmcontrol.registry import METRICS

Row = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class EvalContext:
    """Settings every metric may read."""

    judge: str | None = None  # perplexity judge LM (None = embedded SmolLM2-135M-Instruct)
    encoder: str | None = None  # sentence encoder for coherence / MAUVE (None = all-MiniLM-L6-v2)
    chat: bool = False  # the continuations answer the prompt inside a chat template
    batch_size: int = 8
    arg: str | None = None  # the metric's argument: "reward:harmless" -> "harmless"


def register_metric(
    name: str,
    fn: Callable[[list[Row], EvalContext], dict[str, float]],
    help: str = "",
    needs: Sequence[str] = (),
    default_arg: str | None = None,
) -> None:
    """Add a metric ``fn(rows_of_one_group, ctx) -> {column: value}`` to ``lmcontrol.registry.METRICS``.

    ``needs``: row fields every row must have; ``default_arg``: the argument when none is given. A name taken by
    another function raises ``LMControlError``.
    """
    METRICS.register(name, fn, help, needs=tuple(needs), default_arg=default_arg)


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def _texts(rows: list[Row], key: str = "continuation") -> list[str]:
    return [str(r[key]) for r in rows]


def _by_prompt(rows: list[Row]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r["prompt"], []).append(r)
    return groups


def _references(row: Row) -> list[str]:
    ref = row.get("reference", row.get("references"))
    return [ref] if isinstance(ref, str) else [str(x) for x in ref or []]


# ---------------------------------------------------------------------------------------------------------
# the built-in metrics


def _ppl(rows: list[Row], ctx: EvalContext) -> dict[str, float]:
    from lmcontrol.eval.fluency import FluencyConfig, perplexities

    cfg = FluencyConfig(judge=ctx.judge, batch_size=ctx.batch_size, chat=ctx.chat)
    return {"ppl": _mean(perplexities(_texts(rows, "prompt"), _texts(rows), cfg))}


def _dist(rows: list[Row], ctx: EvalContext) -> dict[str, float]:
    from lmcontrol.eval.text_metrics import distinct_n

    groups = [_texts(g) for g in _by_prompt(rows).values()]
    return {f"dist-{n}": _mean([distinct_n(g, n) for g in groups]) for n in (1, 2, 3)}


def _diversity(rows: list[Row], ctx: EvalContext) -> dict[str, float]:
    from lmcontrol.eval import text_metrics as tm

    texts = _texts(rows)
    out = {f"rep-{n}": _mean([tm.rep_n(t, n) for t in texts]) for n in (2, 3, 4)}
    out["diversity"] = _mean([tm.diversity(t) for t in texts])
    out["repetition"] = tm.repetition_rate(texts)
    return out


def _coherence(rows: list[Row], ctx: EvalContext) -> dict[str, float]:
    from lmcontrol.eval.coherence import coherence

    return {"coherence": _mean(coherence(_texts(rows, "prompt"), _texts(rows), ctx.encoder))}


def _toxicity(rows: list[Row], ctx: EvalContext) -> dict[str, float]:
    """RealToxicityPrompts (Gehman et al. 2020): expected max toxicity over a prompt's k samples, and the
    probability that at least one of them is toxic (>= 0.5)."""
    from lmcontrol.eval.toxicity import get_toxicity_scorer

    scores = get_toxicity_scorer().score(_texts(rows))
    per_prompt: dict[str, list[float]] = {}
    for r, s in zip(rows, scores, strict=True):
        per_prompt.setdefault(r["prompt"], []).append(s)
    maxima = [max(v) for v in per_prompt.values()]
    return {
        "max_toxicity": _mean(maxima),
        "toxicity_prob": sum(m >= 0.5 for m in maxima) / len(maxima),
        "toxicity": _mean(scores),
    }


def _sentiment(rows: list[Row], ctx: EvalContext) -> dict[str, float]:
    from lmcontrol.eval.sentiment import positive_probability, vader_compound

    texts = _texts(rows)
    return {"vader": _mean(vader_compound(texts)), "positive": _mean(positive_probability(texts))}


def _topic(rows: list[Row], ctx: EvalContext) -> dict[str, float]:
    from lmcontrol.eval.topic import topic_accuracy, topic_probabilities

    if all("topic" in r for r in rows):
        return {"topic_acc": topic_accuracy(_texts(rows), [str(r["topic"]) for r in rows])}
    labels, probs = topic_probabilities(_texts(rows))
    top = probs.argmax(-1)
    return {f"topic:{name}": float((top == i).mean()) for i, name in enumerate(labels)}


def _reward(rows: list[Row], ctx: EvalContext) -> dict[str, float]:
    from lmcontrol.eval.reward import load_reward

    name = ctx.arg or "hh"
    column = "reward" if name == "hh" else f"reward:{name}"
    return {column: _mean(load_reward(name)(_texts(rows, "prompt"), _texts(rows)))}


def _mauve(rows: list[Row], ctx: EvalContext) -> dict[str, float]:
    from lmcontrol.eval.mauve_metric import MauveConfig, mauve_score

    features = ctx.arg or "encoder"
    if features not in ("encoder", "lm"):
        raise LMControlError(f"mauve:{features}: features must be 'encoder' or 'lm'")
    model = ctx.encoder if features == "encoder" else ctx.judge
    human = [f"{p} {_references(g[0])[0]}" for p, g in _by_prompt(rows).items()]
    generated = [f"{r['prompt']} {r['continuation']}" for r in rows]
    if len(human) < 2:
        raise LMControlError("mauve needs references for at least 2 different prompts")
    return {"mauve": mauve_score(human, generated, MauveConfig(features=features, model=model))}  # type: ignore[arg-type]


def _bleu(rows: list[Row], ctx: EvalContext) -> dict[str, float]:
    from lmcontrol.eval.text_metrics import corpus_bleu

    return {"bleu": corpus_bleu(_texts(rows), [_references(r) for r in rows])}


def _rouge(rows: list[Row], ctx: EvalContext) -> dict[str, float]:
    from lmcontrol.eval.text_metrics import rouge_l

    return {"rouge-l": rouge_l(_texts(rows), [_references(r) for r in rows])}


def _timing(rows: list[Row], ctx: EvalContext) -> dict[str, float]:
    from lmcontrol.eval.timing import seconds_per_sample, tokens_per_second

    seconds = [float(r["seconds"]) for r in rows]
    out = {"sec/sample": seconds_per_sample(seconds)}
    if all("tokens" in r for r in rows):
        out["tokens/s"] = tokens_per_second([int(r["tokens"]) for r in rows], seconds)
    return out


register_metric("ppl", _ppl, "perplexity of the continuation given the prompt under the judge LM")
register_metric("dist", _dist, "Dist-1/2/3: distinct n-grams across a prompt's samples, mean over prompts")
register_metric("diversity", _diversity, "rep-2/3/4, RE-Control diversity Π(1-rep-n), repetition rate")
register_metric("coherence", _coherence, "cosine of prompt and continuation sentence embeddings")
register_metric("toxicity", _toxicity, "expected max toxicity over samples, toxicity probability, mean")
register_metric("sentiment", _sentiment, "VADER compound and SST-2 probe P(positive)")
register_metric("topic", _topic, "AG News probe: accuracy vs a 'topic' field, else the topic shares")
register_metric("reward", _reward, "mean reward (reward:NAME; default hh)", default_arg="hh")
register_metric("mauve", _mauve, "MAUVE vs the 'reference' continuations (mauve:encoder|lm)", ("reference",))
register_metric("bleu", _bleu, "sacrebleu corpus BLEU vs 'reference' (string or list)", ("reference",))
register_metric("rouge", _rouge, "ROUGE-L F vs 'reference' (best reference)", ("reference",))
register_metric(
    "timing", _timing, "seconds per sample, tokens/s (rows with 'seconds', 'tokens')", ("seconds",)
)


# ---------------------------------------------------------------------------------------------------------
# parsing and running


def parse_metrics(spec: str | Sequence[str]) -> list[tuple[str, str | None]]:
    """``"ppl,reward:harmless"`` -> ``[("ppl", None), ("reward", "harmless")]``; unknown names raise."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise LMControlError(f"no metrics given (known: {', '.join(METRICS.entries())})")
    out = []
    for item in items:
        name, _, arg = item.partition(":")
        METRICS.get(name)  # an unknown name raises, listing the known ones
        out.append((name, arg or None))
    return out


def check_rows(rows: Sequence[Row], metrics: Sequence[tuple[str, str | None]], where: str = "input") -> None:
    """Every row has a non-empty string prompt, a string continuation, and what each metric needs."""
    if not rows:
        raise LMControlError(f"{where} has no rows")
    for i, r in enumerate(rows):
        if not isinstance(r.get("prompt"), str) or not r["prompt"].strip():
            raise LMControlError(f"{where} row {i + 1} has no 'prompt' (a non-empty string)")
        if not isinstance(r.get("continuation"), str):
            raise LMControlError(f"{where} row {i + 1} has no 'continuation' (a string)")
        for name, _ in metrics:
            for field in METRICS.get(name).extra["needs"]:
                if field == "reference" and _references(r):
                    continue
                if field != "reference" and r.get(field) is not None:
                    continue
                raise LMControlError(f"metric '{name}' needs a '{field}' field; {where} row {i + 1} has none")


def evaluate(
    groups: dict[str, list[Row]],
    metrics: str | Sequence[str],
    ctx: EvalContext = EvalContext(),
    progress: Callable[[str, str], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Score each group with each metric: ``{group: {column: value}}``.

    ``progress(group, metric)`` is called after each (group, metric) pair. With ``timing``, each group also
    gets ``overhead``: its seconds per sample over the first group's.
    """
    parsed = parse_metrics(metrics)
    for name, rows in groups.items():
        check_rows(rows, parsed, where=f"group '{name}'")
    results: dict[str, dict[str, float]] = {g: {} for g in groups}
    for name, arg in parsed:
        metric = METRICS.get(name)
        mctx = dataclasses.replace(ctx, arg=arg or metric.extra["default_arg"])
        for group, rows in groups.items():
            results[group].update(metric.factory(rows, mctx))
            if progress is not None:
                progress(group, name)
    if any(name == "timing" for name, _ in parsed) and groups:
        from lmcontrol.eval.timing import overhead

        base = results[next(iter(groups))]["sec/sample"]
        for res in results.values():
            res["overhead"] = overhead(res["sec/sample"], base)
    return results
