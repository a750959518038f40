"""Local files (``.jsonl/.json/.csv/.tsv/.txt``, optionally gzipped), the Hugging Face hub, field helpers."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmcontrol.data.readers import (
    FILE_SUFFIXES,
    DataError,
    Row,
    _one_line,
    _open_text,
    _read_jsonl,
    parse_json,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------
# local files and the Hugging Face hub


def load_file(path: str | os.PathLike[str]) -> list[Row]:
    """Rows of a local file, optionally gzip-compressed (``.jsonl.gz``).

    ``.jsonl``: one object per line; ``.json``: a list of objects; ``.csv``/``.tsv``: a header row, then one
    dict of strings per row; ``.txt``: ``{"text": line}`` per non-empty line.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"data file not found: {p.resolve() if not p.is_absolute() else p}")
    suffix = p.with_suffix("").suffix.lower() if p.suffix.lower() == ".gz" else p.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = _read_jsonl(p)
        elif suffix == ".json":
            with _open_text(p) as f:
                rows = parse_json(f.read(), str(p))
            if not isinstance(rows, list):
                raise DataError(f"{p}: expected a JSON list of objects, got {type(rows).__name__}")
        elif suffix in (".csv", ".tsv"):
            with _open_text(p) as f:
                rows = list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
        elif suffix == ".txt":
            with _open_text(p) as f:
                rows = [{"text": line.strip()} for line in f if line.strip()]
        else:
            raise DataError(f"unsupported file type '{suffix}' for {p} (use {', '.join(FILE_SUFFIXES)})")
    except (UnicodeDecodeError, csv.Error, OSError) as err:
        raise DataError(f"could not read {p}: {_one_line(err)}") from None
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise DataError(f"{p}: row {bad + 1} is a {type(rows[bad]).__name__}, not an object")
    return rows


def _load_hf(spec: str, split: str | None, limit: int | None) -> list[Row]:
    name, _, config = spec[len("hf:") :].partition(":")
    if not name:
        raise DataError(f"bad spec '{spec}': use hf:NAME or hf:NAME:CONFIG")
    try:
        import datasets  # lazy: heavy, optional (the [data] extra), and only needed for hf: specs
    except ImportError as err:
        msg = f"'{spec}' needs the Hugging Face 'datasets' package (pip install lmcontrol[data])"
        raise DataError(msg) from err
    split = split or "train"
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
        rows: list[Row] = []
        for row in ds:
            if limit is not None and len(rows) >= limit:
                break
            rows.append(dict(row))
    except Exception as err:  # network, missing config/split, auth: all become one clear line
        msg = f"could not load '{spec}' split '{split}' from the Hugging Face hub: {_one_line(err)}"
        raise DataError(msg) from err
    return rows


# --------------------------------------------------------------------------------------------------------
# helpers for trainers


def get_field(rows: Sequence[Row], field: str, spec: str) -> list[Any]:
    """``[row[field] for row in rows]``, or a DataError naming the data set and the fields it does have.

    Trainers that take ``--input-field``/``--target-field`` call this so a typo fails with a useful message.
    """
    if not rows:
        raise DataError(f"data set '{spec}' is empty, so it has no field '{field}'")
    for i, row in enumerate(rows):
        if field not in row:
            where = "" if i == 0 else f" in row {i}"
            raise DataError(f"data set '{spec}' has no field '{field}'{where} (fields: {', '.join(row)})")
    return [row[field] for row in rows]
