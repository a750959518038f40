"""``lmcontrol eval FILE.jsonl --metrics ...``: score generations; a table grouped by method, and JSON.

Rows need ``prompt`` and ``continuation``; ``method`` groups them (rows without it form the group ``all``),
``reference`` feeds BLEU / ROUGE-L / MAUVE, ``seconds`` / ``tokens`` feed ``timing``, and ``chat: true`` on
every row makes the perplexity judge read the prompt inside its chat template (``lmcontrol bench`` writes it).
"""

from __future__ import annotations

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


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a number or a numeric string (CSV cells are strings), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def check_row_types(rows: list[dict[str, Any]], where: str) -> None:
    """Optional fields must have the types the metrics read (one line naming the row otherwise)."""

    def bad(i: int, field: str, want: str, value: Any) -> LMControlError:
        got = "null" if value is None else type(value).__name__
        return LMControlError(f"{where} row {i + 1}: '{field}' must be {want}, got {got} {str(value)[:40]!r}")

    for i, r in enumerate(rows):
        if r.get("method") is not None and not isinstance(r["method"], str):
            raise bad(i, "method", "a string", r["method"])
        for field in ("reference", "references"):
            ref = r.get(field)
            if ref is not None and not (
                isinstance(ref, str) or (isinstance(ref, list) and all(isinstance(x, str) for x in ref))
            ):
                raise bad(i, field, "a string or a list of strings", ref)
        if r.get("seconds") is not None:
            seconds = _number(r["seconds"])
            if seconds is None or not math.isfinite(seconds) or seconds < 0:
                raise bad(i, "seconds", "a finite number >= 0", r["seconds"])
        if r.get("tokens") is not None:
            tokens = r["tokens"]
            if isinstance(tokens, str):  # a CSV cell: must read as an integer, as the timing metric reads it
                tokens = int(tokens) if tokens.strip().isdigit() else None
            if isinstance(tokens, float) and tokens.is_integer():
                tokens = int(tokens)
            if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
                raise bad(i, "tokens", "an integer >= 0", r["tokens"])


def run_eval(file: Path, metrics: str, output: Path | None, judge: str | None) -> dict[str, dict[str, float]]:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from lmcontrol.artifacts import atomic_write_json, check_output_path
    from lmcontrol.bench.report import columns, fmt
    from lmcontrol.data import load_file
    from lmcontrol.eval.suite import EvalContext, check_rows, evaluate, parse_metrics

    parsed = parse_metrics(metrics)  # unknown names fail before anything is read or loaded
    if output is not None:
        check_output_path(output, flag="--output")
    rows = load_file(file)
    if not rows:
        raise LMControlError(f"{file} has no rows")
    check_row_types(rows, str(file))
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
        atomic_write_json(output, {"file": str(file), "metrics": metrics, "methods": clean})
    return results
