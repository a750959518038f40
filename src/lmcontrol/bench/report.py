"""The human-readable side of a bench run: ``report.md`` (tables) and PNG bar plots (matplotlib, Agg).

``results`` is the dict written to ``results.json``: ``{"suite", "model", "n", "samples", "seed",
"generation", "metrics", "methods": {method: {column: value}}}``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lmcontrol.artifacts import atomic_write_text

TIMING_COLUMNS = ("sec/sample", "tokens/s", "overhead")
# Which way is better, for the arrows in the table header (columns not listed: no arrow).
HIGHER_IS_BETTER = {
    "dist-1",
    "dist-2",
    "dist-3",
    "diversity",
    "coherence",
    "mauve",
    "bleu",
    "rouge-l",
    "reward",
    "tokens/s",
    "topic_acc",
}
LOWER_IS_BETTER = {
    "ppl",
    "rep-2",
    "rep-3",
    "rep-4",
    "repetition",
    "max_toxicity",
    "toxicity_prob",
    "toxicity",
    "sec/sample",
    "overhead",
}


def columns(results: dict[str, Any]) -> list[str]:
    """Every column in first-seen order, quality metrics first, timing last."""
    seen: list[str] = []
    for values in results["methods"].values():
        seen += [c for c in values if c not in seen]
    return [c for c in seen if c not in TIMING_COLUMNS] + [c for c in TIMING_COLUMNS if c in seen]


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _header(col: str) -> str:
    return col + (" ↑" if col in HIGHER_IS_BETTER else " ↓" if col in LOWER_IS_BETTER else "")


def markdown_table(results: dict[str, Any], cols: list[str]) -> list[str]:
    lines = ["| method | " + " | ".join(_header(c) for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, values in results["methods"].items():
        lines.append(f"| {name} | " + " | ".join(fmt(values.get(c)) for c in cols) + " |")
    return lines


def write_report(results: dict[str, Any], out: Path) -> Path:
    """``out/report.md``: settings, the quality table, the timing table, and the plots."""
    cols = columns(results)
    quality = [c for c in cols if c not in TIMING_COLUMNS]
    gen = results.get("generation", {})
    methods = list(results["methods"])
    lines = [
        f"# bench `{results['suite']}`",
        "",
        f"- model: `{results['model']}`; {results['n']} prompts x {results['samples']} samples per method, "
        f"seed {results.get('seed', 0)}",
        f"- decoding: max_new_tokens={gen.get('max_new_tokens')}, temperature={gen.get('temperature')}, "
        f"top_p={gen.get('top_p')}, top_k={gen.get('top_k')}, chat={gen.get('chat')}",
        f"- methods run interleaved in one process; timing ratios are against `{methods[0]}`",
        "",
        "## Quality",
        "",
        *markdown_table(results, quality),
    ]
    timing = [c for c in cols if c in TIMING_COLUMNS]
    if timing:
        lines += ["", f"## Timing (vs `{methods[0]}`)", "", *markdown_table(results, timing)]
    lines += ["", "![metrics](metrics.png)", "", "![timing](timing.png)", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def _finite(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else 0.0


def _bars(ax: Any, names: list[str], values: list[Any], title: str, errors: list[Any] | None = None) -> None:
    heights = [_finite(v) for v in values]
    yerr = [_finite(e) for e in errors] if errors else None
    ax.bar(range(len(names)), heights, yerr=yerr, capsize=3, color=[f"C{i}" for i in range(len(names))])
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_title(_header(title), fontsize=9)
    ax.tick_params(axis="y", labelsize=7)


def write_plots(results: dict[str, Any], out: Path) -> list[Path]:
    """``metrics.png`` (one bar chart per quality column, its ``COLUMN_se`` as error bars) and ``timing.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["methods"])
    cols = [c for c in columns(results) if not c.endswith("_se")]
    written = []
    for filename, group in (
        ("metrics.png", [c for c in cols if c not in TIMING_COLUMNS]),
        ("timing.png", [c for c in cols if c in TIMING_COLUMNS]),
    ):
        if not group:
            continue
        ncols = min(4, len(group))
        nrows = math.ceil(len(group) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.8 * nrows), squeeze=False)
        for ax, col in zip(axes.flat, group, strict=False):
            errors = [results["methods"][m].get(f"{col}_se") for m in names]
            _bars(ax, names, [results["methods"][m].get(col) for m in names], col, errors if any(errors) else None)
        for ax in list(axes.flat)[len(group) :]:
            ax.axis("off")
        fig.suptitle(
            f"{results['suite']} — {results['n']} prompts x {results['samples']} samples", fontsize=10
        )
        fig.tight_layout()
        fig.savefig(out / filename, dpi=100)
        plt.close(fig)
        written.append(out / filename)
    return written
