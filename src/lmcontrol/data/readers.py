"""Locating the shared data folder and reading its files (JSONL strictly: untrusted input)."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import os
from pathlib import Path
from typing import IO, Any

from lmcontrol import LMControlError

log = logging.getLogger(__name__)


Row = dict[str, Any]

DATA_ENV = "LMCONTROL_DATA"
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt")


class DataError(LMControlError):
    """A data set or file is missing, unknown or malformed. The message is always one line."""


# --------------------------------------------------------------------------------------------------------
# locating files


def data_root() -> Path:
    """The shared data folder.

    ``$LMCONTROL_DATA`` if set, else ``<repo>/../shared/data``, else ``$PWD/../shared/data`` (see the module
    docstring for why there are two defaults).
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    repo_relative = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
    # A non-editable install puts this file in site-packages, where parents[3] is not the repo.
    for candidate in (repo_relative, Path.cwd() / ".." / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return repo_relative.resolve()


def _need(root: Path, rel: str, name: str) -> Path:
    """The path of a shared-data file, or a DataError naming the data set and the missing file."""
    path = root / rel
    if not path.is_file():
        raise DataError(f"data set '{name}' not found: {path} missing (set {DATA_ENV})")
    return path


def _open_text(path: Path) -> IO[str]:
    # newline="" lets the csv module handle quoted fields that contain newlines (Jigsaw comments do).
    # utf-8-sig: a byte-order mark (editors on Windows add one) is dropped instead of breaking the first row.
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


MAX_JSON_DEPTH = 64  # deeper rows are refused: nothing lmcontrol reads nests more than a few levels


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_depth(value: Any) -> int:
    """How deeply ``value`` nests lists and dicts (iterative: a deep value must not overflow the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                break
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_json(text: str, where: str) -> Any:
    """Strict JSON for untrusted input: one DataError line for syntax errors, NaN/Infinity literals, integers
    longer than Python accepts (4,300 digits) and nesting deeper than ``MAX_JSON_DEPTH``."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise DataError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    except ValueError as err:  # huge integers, NaN/Infinity
        raise DataError(f"{where}: not valid JSON ({_one_line(err)})") from None
    if _json_depth(value) > MAX_JSON_DEPTH:
        raise DataError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _read_jsonl(path: Path) -> list[Any]:
    with _open_text(path) as f:
        return [parse_json(line, f"{path}: line {i}") for i, line in enumerate(f, 1) if line.strip()]


def _read_csv(path: Path, delimiter: str = ",", quoting: int = csv.QUOTE_MINIMAL) -> list[list[str]]:
    with _open_text(path) as f:
        return list(csv.reader(f, delimiter=delimiter, quoting=quoting))


def _read_csv_dicts(path: Path) -> list[dict[str, str]]:
    with _open_text(path) as f:
        return list(csv.DictReader(f))


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:300]}" if lines else type(err).__name__
