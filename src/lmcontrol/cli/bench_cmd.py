"""``lmcontrol bench SUITE``: run a registered suite's methods side by side (see ``lmcontrol.bench``)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from lmcontrol import LMControlError

log = logging.getLogger(__name__)


def load_prompt_file(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file with a ``prompt`` field (and an optional ``reference``, kept for MAUVE)."""
    from lmcontrol.data import load_file

    rows = load_file(path)
    if not rows:
        raise LMControlError(f"{path} has no rows")
    out: list[dict[str, Any]] = []
    for i, r in enumerate(rows):
        if not isinstance(r.get("prompt"), str) or not r["prompt"].strip():
            raise LMControlError(f"{path} row {i + 1} has no 'prompt' (a non-empty string)")
        ref = r.get("reference")
        if ref is not None and not (
            isinstance(ref, str) or (isinstance(ref, list) and all(isinstance(x, str) for x in ref))
        ):
            raise LMControlError(f"{path} row {i + 1}: 'reference' must be a string or a list of strings")
        out.append({"prompt": r["prompt"], **({"reference": r["reference"]} if r.get("reference") else {})})
    return out


def dedupe(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """First ``n`` rows with distinct prompts (a prompt is the resume key, so it must be unique)."""
    seen: set[str] = set()
    out = []
    for r in rows:
        if r["prompt"] not in seen:
            seen.add(r["prompt"])
            out.append(r)
    if len(out) < len(rows):
        log.warning("dropped %d duplicate prompts", len(rows) - len(out))
    if len(out) < n:
        log.warning("only %d prompts available (asked for %d)", len(out), n)
    return out[:n]


def run_bench(
    suite: str,
    prompts: Path | None,
    n: int,
    samples: int,
    seed: int,
    methods: str | None,
    max_new_tokens: int | None,
    out: Path,
    list_methods: bool,
) -> None:
    from rich.console import Console
    from rich.table import Table

    from lmcontrol import registry

    bench_suite = registry.suite_entry(suite).factory()
    console = Console()
    if list_methods:
        table = Table("method", "what", title=f"suite '{suite}'")
        for m in bench_suite.methods:
            table.add_row(m.name, m.help)
        console.print(table)
        return
    if n < 1 or samples < 1:
        raise LMControlError(f"--n and --samples must be >= 1, got {n} and {samples}")
    from lmcontrol.artifacts import check_output_path

    check_output_path(out, flag="--out", directory=True)
    if max_new_tokens is not None:
        if max_new_tokens < 1:
            raise LMControlError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
        gen = dataclasses.replace(bench_suite.generation, max_new_tokens=max_new_tokens)
        bench_suite = dataclasses.replace(bench_suite, generation=gen)
    bench_suite.select(methods)  # fail on an unknown method before loading anything
    rows = dedupe(load_prompt_file(prompts) if prompts is not None else bench_suite.prompts(n), n)
    if not rows:
        raise LMControlError(f"suite '{suite}' got no prompts")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from lmcontrol.bench.runner import run_suite

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        run_suite(bench_suite, out, rows, samples=samples, seed=seed, methods=methods, progress=progress)
    console.print(
        (out / "report.md").read_text(encoding="utf-8"), markup=False, highlight=False, soft_wrap=True
    )
    console.print(f"wrote {out}/generations.jsonl, results.json, report.md, metrics.png, timing.png")
