"""The data-set registry: ``load_dataset(name[:subset] | hf:NAME | file)`` and its splits and aliases."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from lmcontrol.data.classification import _load_ag_news, _load_jigsaw, _load_sst2
from lmcontrol.data.e2e import _E2E_CONTROL_FILES, _load_e2e
from lmcontrol.data.files import _load_hf, load_file
from lmcontrol.data.hh import _HH_SUBSETS, _load_hh
from lmcontrol.data.prompt_sets import _RTP_SUBSETS, _load_advbench, _load_harmfulqa, _load_rtp
from lmcontrol.data.readers import (
    FILE_SUFFIXES,
    DataError,
    Row,
    data_root,
)
from lmcontrol.data.text import _load_c4, _load_tinyshakespeare, _load_wikitext

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class _Entry:
    """A registered data set: ``splits`` maps each subset (the first is the default) to its splits (the
    first is the default; an empty tuple means the set has no splits and ``split`` must be None)."""

    loader: Callable[[Path, str, str], list[Row]]
    splits: dict[str, tuple[str, ...]]
    heldout: str | None = None  # what SOURCE.md holds back, for the "heldout" error message
    split_aliases: dict[str, str] | None = None


_DATASETS: dict[str, _Entry] = {
    "hh-rlhf": _Entry(
        _load_hh,
        {s: ("train",) for s in ("all", *_HH_SUBSETS)},
        heldout="250 dialogues of each test split",
        split_aliases={"test": "train"},
    ),
    "e2e": _Entry(
        _load_e2e,
        {
            "raw": ("train", "dev", "test"),
            "tokenized": ("train", "valid", "test"),
            "control": tuple(_E2E_CONTROL_FILES),
        },
    ),
    "sst2": _Entry(_load_sst2, {"": ("train", "dev", "test")}),
    "ag_news": _Entry(_load_ag_news, {"": ("train", "test")}),
    "jigsaw": _Entry(_load_jigsaw, {"original": ("train", "test"), "balanced": ("test",)}),
    "rtp": _Entry(
        _load_rtp,
        {s: ("train",) for s in ("all", *_RTP_SUBSETS)},
        heldout="300 of the 1,200 non-toxic prompts",
    ),
    "wikitext": _Entry(_load_wikitext, {"": ("valid", "test")}),
    "c4": _Entry(_load_c4, {"": ()}),
    "harmfulqa": _Entry(
        _load_harmfulqa, {s: () for s in ("harmfulqa", "dangerousqa", "catqa", "adversarialqa")}
    ),
    "advbench": _Entry(
        _load_advbench,
        {s: ("train",) for s in ("behaviors", "strings", "transfer")},
        heldout="100 of the 520 behaviours",
    ),
    "tinyshakespeare": _Entry(_load_tinyshakespeare, {"": ("all", "train", "valid")}),
}
_ALIASES = {
    "hh_rlhf": "hh-rlhf",
    "jigsaw_toxic": "jigsaw",
    "real_toxicity_prompts": "rtp",
    "c4_sample": "c4",
    "sst-2": "sst2",
    "agnews": "ag_news",
    "ag-news": "ag_news",
    "tiny_shakespeare": "tinyshakespeare",
}
_VALID_SPLITS = ("valid", "dev", "validation", "val")  # one name for every data set's validation split


def list_datasets() -> list[str]:
    """The registered data set names (aliases not included)."""
    return sorted(_DATASETS)


def _resolve_split(name: str, entry: _Entry, subset: str, split: str | None) -> str:
    allowed = entry.splits[subset]
    label = f"{name}:{subset}" if subset else name
    if split is None:
        return allowed[0] if allowed else ""
    split = split.strip().lower()
    if not allowed:
        raise DataError(f"data set '{label}' has no splits; use split=None (got '{split}')")
    if split == "heldout" and entry.heldout:
        raise DataError(
            f"data set '{name}' split 'heldout' is not available: {entry.heldout} are held back "
            f"for independent evaluation and are not in {data_root()}"
        )
    split = (entry.split_aliases or {}).get(split, split)
    if split in _VALID_SPLITS:
        split = next((s for s in _VALID_SPLITS if s in allowed), split)
    if split not in allowed:
        raise DataError(f"data set '{label}' has no split '{split}' (splits: {', '.join(allowed)})")
    return split


@lru_cache(maxsize=32)
def _load_registered(root: str, name: str, subset: str, split: str) -> tuple[Row, ...]:
    # Keyed on the root too, so pointing LMCONTROL_DATA elsewhere (tests do) never serves stale rows.
    rows = _DATASETS[name].loader(Path(root), subset, split)
    log.debug("loaded %s:%s split=%s: %d rows from %s", name, subset, split, len(rows), root)
    return tuple(rows)


def _copy(value: Any) -> Any:
    """A deep copy of the dict/list part of a row: callers may mutate rows without touching the cache."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _looks_like_path(spec: str) -> bool:
    suffixes = [s.lower() for s in Path(spec).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return "/" in spec or os.sep in spec or bool(suffixes and suffixes[-1] in FILE_SUFFIXES)


def load_dataset(spec: str, split: str | None = None, limit: int | None = None) -> list[Row]:
    """Load ``spec`` as a fresh list of dicts: a registered ``name[:subset]``, ``hf:NAME[:CONFIG]`` or a file.

    ``split=None`` picks the data set's default split (see the module docstring); ``limit`` keeps the first
    ``limit`` rows. Raises DataError, with a one-line message, for anything missing or malformed.
    """
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    spec = spec.strip()
    if spec.startswith("hf:"):
        return _load_hf(spec, split, limit)
    if _looks_like_path(spec):
        rows = load_file(spec)
        if split not in (None, "train", "all"):
            log.warning("split '%s' ignored for local file %s", split, spec)
        return rows[:limit] if limit is not None else rows
    raw_name, _, subset = spec.partition(":")
    name = _ALIASES.get(raw_name.lower(), raw_name.lower())
    if name not in _DATASETS:
        raise DataError(
            f"unknown data set '{raw_name}' (known: {', '.join(list_datasets())}; "
            f"or hf:NAME[:CONFIG], or a {'/'.join(FILE_SUFFIXES)} file)"
        )
    entry = _DATASETS[name]
    subsets = list(entry.splits)
    subset = subset.strip().lower() if subset else subsets[0]
    if subset not in entry.splits:
        named = ", ".join(s for s in subsets if s) or "none"
        raise DataError(f"data set '{name}' has no subset '{subset}' (subsets: {named})")
    split = _resolve_split(name, entry, subset, split)
    rows = _load_registered(str(data_root()), name, subset, split)
    return [_copy(r) for r in (rows[:limit] if limit is not None else rows)]


def e2e_control_targets(kind: str = "attribute") -> list[Row]:
    """Diffusion-LM's E2E control targets (``attribute``, ``pos``, ``spans`` or ``pos_attr``).

    Same as ``load_dataset("e2e:control", split=kind)``.
    """
    return load_dataset("e2e:control", split=kind)
