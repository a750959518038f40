"""Aggregate attack records into the red-team figures (with standard errors), a markdown report and plots."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmcontrol.bench.stats import mean_se
from lmcontrol.redteam.strategies import (
    Strategies,
    cluster_prompts,
    distinct_texts,
    prompt_perplexity,
    self_bleu,
    strategy_text,
)


def as_dict(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record) if dataclasses.is_dataclass(record) else dict(record)


def assign_clusters(groups: dict[str, list[dict[str, Any]]], distance_threshold: float = 0.5) -> Strategies:
    """Cluster every successful prompt of every method together (so cluster ids are comparable across methods)
    by its strategy (the target's words masked: ``strategy_text``) and write each success's ``cluster`` id in place."""
    refs = [(m, i, j) for m, recs in groups.items() for i, r in enumerate(recs) for j in range(len(r["successes"]))]
    prompts = [groups[m][i]["successes"][j]["prompt"] for m, i, j in refs]
    # embed the strategy words alone (a marker would dominate short templates and merge them all)
    texts = [
        strategy_text(p, groups[m][i].get("target"), marker="") or "<Y>"
        for p, (m, i, _) in zip(prompts, refs, strict=True)
    ]
    strat = cluster_prompts(prompts, distance_threshold=distance_threshold, texts=texts)
    for (m, i, j), lab in zip(refs, strat.labels, strict=True):
        groups[m][i]["successes"][j]["cluster"] = lab
    return strat


def summarize(records: Sequence[dict[str, Any]], base_lm: Any | None = None) -> dict[str, Any]:
    """ASR, distinct successes, self-BLEU, clusters, prompt perplexity, target passes and seconds per behaviour.

    ``records`` are ``BehaviorResult`` dicts (clusters assigned by ``assign_clusters``); ``base_lm`` (the plain
    base LM) enables the perplexity figures.
    """
    n = len(records)
    asr = mean_se([float(r["success"]) for r in records])
    distinct = mean_se([len(r["successes"]) for r in records])
    sb = [s for r in records if (s := self_bleu([d["prompt"] for d in r["successes"]])) is not None]
    masked = [[strategy_text(d["prompt"], r.get("target"), marker="") for d in r["successes"]] for r in records]
    sb_masked = [s for m in masked if (s := self_bleu(m)) is not None]
    strategies = mean_se([distinct_texts(m) for m in masked])
    clusters = sorted({d["cluster"] for r in records for d in r["successes"] if d.get("cluster") is not None})
    out: dict[str, Any] = {
        "behaviors": n,
        "asr": asr[0],
        "asr_se": asr[1],
        "successes_per_behavior": distinct[0],
        "successes_per_behavior_se": distinct[1],
        "self_bleu": mean_se(sb)[0] if sb else None,
        "self_bleu_se": mean_se(sb)[1] if sb else None,
        "self_bleu_behaviors": len(sb),
        "self_bleu_masked": mean_se(sb_masked)[0] if sb_masked else None,
        "self_bleu_masked_se": mean_se(sb_masked)[1] if sb_masked else None,
        "strategies_per_behavior": strategies[0],
        "strategies_per_behavior_se": strategies[1],
        "clusters": len(clusters),
        "best_logp": mean_se([r["best_logp"] for r in records if r.get("best_logp") is not None])[0],
        "best_logp_se": mean_se([r["best_logp"] for r in records if r.get("best_logp") is not None])[1],
        "target_passes": mean_se([r["target_passes"] for r in records])[0],
        "target_passes_se": mean_se([r["target_passes"] for r in records])[1],
        "seconds": mean_se([r["seconds"] for r in records])[0],
        "seconds_se": mean_se([r["seconds"] for r in records])[1],
    }
    if base_lm is not None:
        best = [r["best_prompt"] for r in records if r.get("best_prompt")]
        succ = [d["prompt"] for r in records for d in r["successes"]]
        if best:
            out["ppl_best_prompt_median"] = statistics.median(prompt_perplexity(base_lm, best))
        if succ:
            out["ppl_success_median"] = statistics.median(prompt_perplexity(base_lm, succ))
    return out


def _fmt(v: Any, se: Any = None) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g} ± {se:.2g}" if isinstance(se, float) and math.isfinite(se) else f"{v:.3g}"
    return str(v)


def report_table(summary: dict[str, dict[str, Any]]) -> list[str]:
    """A markdown table, one row per method."""
    lines = [
        "| method | ASR | distinct successes / behaviour | distinct strategies / behaviour | best log p(y|x) | "
        "self-BLEU | self-BLEU (y masked) | clusters | median ppl (best prompt) | target passes / behaviour | "
        "seconds / behaviour |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m, s in summary.items():
        lines.append(
            f"| {m} | {_fmt(s['asr'], s['asr_se'])} "
            f"| {_fmt(s['successes_per_behavior'], s['successes_per_behavior_se'])}"
            f" | {_fmt(s.get('strategies_per_behavior'), s.get('strategies_per_behavior_se'))}"
            f" | {_fmt(s.get('best_logp'), s.get('best_logp_se'))}"
            f" | {_fmt(s['self_bleu'], s['self_bleu_se'])}"
            f" | {_fmt(s.get('self_bleu_masked'), s.get('self_bleu_masked_se'))}"
            f" | {s['clusters']} | {_fmt(s.get('ppl_best_prompt_median'))}"
            f" | {_fmt(s['target_passes'], s['target_passes_se'])} | {_fmt(s['seconds'], s['seconds_se'])} |"
        )
    return lines


def write_outputs(
    out: Path,
    groups: dict[str, list[dict[str, Any]]],
    summary: dict[str, dict[str, Any]],
    strat: Strategies,
    settings: dict[str, Any],
    title: str = "Red-team attack",
) -> None:
    """``results.json`` (per behaviour + aggregate), ``report.md`` and ``asr.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "settings": settings,
        "aggregate": summary,
        "strategies": [{"cluster": c, "size": strat.sizes[c], "typical": strat.names[c]} for c in strat.names],
        "behaviors": groups,
    }
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1, default=float))
    tmp.replace(out / "results.json")
    lines = [f"# {title}", "", *report_table(summary), "", "## Strategies (clusters of successful prompts)", ""]
    for c in list(strat.names)[:15]:
        lines.append(f"- **{c}** ({strat.sizes[c]} prompts): " + " / ".join(f"`{p[:90]}`" for p in strat.names[c]))
    lines += ["", "## Example successes", ""]
    for m, recs in groups.items():
        for r in [r for r in recs if r["successes"]][:3]:
            d = r["successes"][0]
            lines.append(f"- {m} · *{r['behavior'][:70]}*: `{d['prompt'][:120]}` → {d['reply'][:80]!r}")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    plot_asr(summary, out / "asr.png")


def plot_asr(summary: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.3 * len(names) + 3), 3.6))
    for ax, key, label in (
        (axes[0], "asr", "attack success rate"),
        (axes[1], "successes_per_behavior", "distinct successes / behaviour"),
    ):
        vals = [summary[m][key] for m in names]
        errs = [summary[m][f"{key}_se"] for m in names]
        ax.bar(range(len(names)), vals, yerr=errs, capsize=3, color="#4c72b0")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
