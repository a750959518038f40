"""``lmcontrol eval FILE.jsonl --metrics ...``: score generations; a table grouped by method, and JSON.

Rows need ``prompt`` and ``continuation``; ``method`` groups them (rows without it form the group ``all``),
``reference`` feeds BLEU / ROUGE-L / MAUVE, ``seconds`` / ``tokens`` feed ``timing``, and ``chat: true`` on
every row makes the perplexity judge read the prompt inside its chat template (``lmcontrol bench`` writes it).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lmcontrol import LMControlError


def group_rows(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows by their ``method`` field, in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r.get("method") or "all"), []).append(r)
    return groups


def run_eval(file: Path, metrics: str, output: Path | None, judge: str | None) -> dict[str, dict[str, float]]:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from lmcontrol.bench.report import columns, fmt
    from lmcontrol.data import load_file
    from lmcontrol.eval.suite import EvalContext, check_rows, evaluate, parse_metrics

    parsed = parse_metrics(metrics)  # unknown names fail before anything is read or loaded
    rows = load_file(file)
    if not rows:
        raise LMControlError(f"{file} has no rows")
    check_rows(rows, parsed, where=str(file))
    groups = group_rows(rows)
    ctx = EvalContext(judge=judge, chat=all(r.get("chat") is True for r in rows))
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("scoring", total=len(parsed) * len(groups))
        results = evaluate(groups, metrics, ctx, progress=lambda g, m: progress.advance(task))

    cols = columns({"methods": results})
    # metrics down, methods across: a handful of methods fits any terminal, a dozen metric columns would not
    table = Table("metric", *results, title=f"{file} ({len(rows)} rows)")
    table.add_row("rows", *(str(len(groups[g])) for g in results))
    for c in cols:
        table.add_row(c, *(fmt(results[g].get(c)) for g in results))
    Console().print(table)
    if output is not None:
        clean = {
            g: {k: (v if isinstance(v, float) and math.isfinite(v) else None) for k, v in vals.items()}
            for g, vals in results.items()
        }
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"file": str(file), "metrics": metrics, "methods": clean}, indent=2))
    return results
