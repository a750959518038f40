"""Run a suite: every method on the same prompts in one process, interleaved, resumable; then score it.

Work is cut into units (prompt batch b, sample s, method m). Units run batch by batch and sample by sample,
and within each (b, s) the methods take turns in an order rotated by one each time, so slow drift in machine
load (other jobs, thermal throttling) hits every method alike and the timing ratios stay fair. Every method
gets a short untimed warm-up call first. Sample s of batch b is decoded with seed ``seed_for(seed, s, b)``
for every method, so methods see the same random stream.

Each finished unit is appended to ``DIR/generations.jsonl`` at once (and flushed); a re-run with the same
``--out`` skips the (method, prompt, sample) triples already there, so an interrupted run resumes, and a run
with more ``--n`` / ``--samples`` only adds the missing part. ``DIR/run.json`` records the settings; a re-run
with different decoding settings or seed refuses instead of mixing two runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmcontrol import LMControlError
from lmcontrol.artifacts import atomic_write_text
from lmcontrol.bench.suite import BenchMethod, BenchSuite, Row

if TYPE_CHECKING:
    from lmcontrol.models import LanguageModel

log = logging.getLogger(__name__)

GENERATIONS = "generations.jsonl"
RESULTS = "results.json"
RUN = "run.json"


@dataclasses.dataclass(frozen=True)
class Unit:
    batch: int
    sample: int
    method: str
    prompts: tuple[int, ...]  # indices into the prompt rows still missing for this method and sample


def seed_for(seed: int, sample: int, batch: int) -> int:
    """The decoding seed of one (sample, batch), shared by every method."""
    return (seed * 1_000_003 + sample * 10_007 + batch) % (2**31 - 1)


def read_generations(path: Path) -> list[Row]:
    """Rows already in ``generations.jsonl`` (a torn last line from a killed run is dropped)."""
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s: ignoring unreadable line %d (an interrupted write?)", path, i + 1)
    return rows


def plan(
    prompts: list[Row],
    methods: list[BenchMethod],
    samples: int,
    batch_size: int,
    done: set[tuple[str, str, int]],
) -> list[Unit]:
    """The units still to run, interleaved: per (batch, sample) every method, rotating the order."""
    units = []
    batches = [list(range(i, min(i + batch_size, len(prompts)))) for i in range(0, len(prompts), batch_size)]
    for b, idx in enumerate(batches):
        for s in range(samples):
            turn = (b * samples + s) % len(methods)
            for m in methods[turn:] + methods[:turn]:
                todo = tuple(i for i in idx if (m.name, prompts[i]["prompt"], s) not in done)
                if todo:
                    units.append(Unit(b, s, m.name, todo))
    return units


def _check_run_file(out: Path, settings: dict[str, Any]) -> None:
    path = out / RUN
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as they read back
    if path.is_file():
        old = json.loads(path.read_text())
        diffs = [k for k in ("suite", "model", "seed", "generation") if old.get(k) != settings.get(k)]
        if diffs:
            raise LMControlError(
                f"{out} holds a run with other settings ({', '.join(diffs)} differ); use another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(settings, indent=2))


def generate_all(
    suite: BenchSuite,
    lm: LanguageModel,
    prompts: list[Row],
    methods: list[BenchMethod],
    samples: int,
    seed: int,
    out: Path,
    progress: Any = None,
) -> None:
    """Run every missing unit, appending rows to ``out/generations.jsonl``."""
    from lmcontrol.generation import GenerationConfig, generate

    path = out / GENERATIONS
    done = {(r["method"], r["prompt"], int(r["sample"])) for r in read_generations(path)}
    units = plan(prompts, methods, samples, suite.batch_size, done)
    if not units:
        return
    by_name = {m.name: m for m in methods}
    pending = {u.method for u in units}
    controls = {m.name: list(m.controls(lm)) if m.controls else [] for m in methods if m.name in pending}

    def call(method: BenchMethod, texts: list[str], config: GenerationConfig):
        if method.run is not None:
            return method.run(lm, texts, config)
        return generate(lm, texts, config, controls=controls[method.name])

    for name in sorted(pending, key=[m.name for m in methods].index):  # untimed warm-up
        warm = dataclasses.replace(by_name[name].config(suite.generation), max_new_tokens=2)
        call(by_name[name], [prompts[units[0].prompts[0]]["prompt"]], warm)
    task = progress.add_task("generating", total=len(units)) if progress is not None else None
    if path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        with path.open("a", encoding="utf-8") as f:  # close a torn last line so appends stay readable
            f.write("\n")
    with path.open("a", encoding="utf-8") as f:
        for unit in units:
            method = by_name[unit.method]
            config = dataclasses.replace(
                method.config(suite.generation), seed=seed_for(seed, unit.sample, unit.batch)
            )
            rows = [prompts[i] for i in unit.prompts]
            result = call(method, [r["prompt"] for r in rows], config)
            per_row = result.seconds / len(rows)
            for row, text, ids in zip(rows, result.texts, result.token_ids, strict=True):
                record = {
                    "method": unit.method,
                    "prompt": row["prompt"],
                    "continuation": text,
                    "seconds": per_row,
                    "sample": unit.sample,
                    "seed": config.seed,
                    "tokens": len(ids),
                    "chat": config.chat,
                }
                if row.get("reference"):
                    record["reference"] = row["reference"]
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())  # a killed run keeps every finished unit
            if task is not None:
                progress.advance(task)


def _clean(value: Any) -> Any:
    """NaN/inf -> None so results.json is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def run_suite(
    suite: BenchSuite,
    out: Path,
    prompts: list[Row],
    *,
    samples: int = 1,
    seed: int = 0,
    methods: str | None = None,
    lm: LanguageModel | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Generate (resuming), evaluate, and write results.json, report.md and the plots; returns the results."""
    from lmcontrol.bench.report import write_plots, write_report
    from lmcontrol.eval.suite import EvalContext, evaluate
    from lmcontrol.models import load_lm

    if samples < 1:
        raise LMControlError(f"--samples must be >= 1, got {samples}")
    chosen = suite.select(methods)
    lm = lm if lm is not None else load_lm(suite.model)
    settings = {
        "suite": suite.name,
        "model": lm.info.name,
        "seed": seed,
        "generation": _clean(dataclasses.asdict(suite.generation)),
    }
    _check_run_file(out, settings)
    generate_all(suite, lm, prompts, chosen, samples, seed, out, progress)

    wanted = {r["prompt"] for r in prompts}
    groups: dict[str, list[Row]] = {m.name: [] for m in chosen}
    for r in read_generations(out / GENERATIONS):
        if r["method"] in groups and r["prompt"] in wanted and int(r["sample"]) < samples:
            groups[r["method"]].append(r)
    metrics = [*suite.metrics, "timing"]
    task = progress.add_task("scoring", total=len(metrics) * len(groups)) if progress is not None else None
    scores = evaluate(
        groups,
        metrics,
        EvalContext(chat=suite.generation.chat),
        progress=(lambda g, m: progress.advance(task)) if task is not None else None,
    )
    results = {
        **settings,
        "n": len(prompts),
        "samples": samples,
        "metrics": metrics,
        "methods": {name: _clean(vals) for name, vals in scores.items()},
    }
    if suite.finalize is not None:
        results = _clean(suite.finalize(results, out))
    atomic_write_text(out / RESULTS, json.dumps(results, indent=2))
    write_report(results, out)
    write_plots(results, out)
    return results
