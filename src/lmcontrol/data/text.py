"""Plain text: WikiText-103, a C4 sample, Tiny Shakespeare."""

from __future__ import annotations

import logging
from pathlib import Path

from lmcontrol.data.readers import (
    Row,
    _need,
    _read_jsonl,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------
# plain text: WikiText, C4, Tiny Shakespeare


def _load_wikitext(root: Path, subset: str, split: str) -> list[Row]:
    path = _need(root, f"wikitext/wikitext-103/wiki.{split}.tokens", "wikitext")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not (line.startswith("= ") and line.endswith(" =")):  # " = = Heading = = "
            rows.append({"text": line})
    return rows


def _load_c4(root: Path, subset: str, split: str) -> list[Row]:
    recs = _read_jsonl(_need(root, "c4_sample/c4_validation_2k.jsonl.gz", "c4"))
    return [{"text": r["text"], "url": r["url"], "timestamp": r.get("timestamp")} for r in recs]


def _load_tinyshakespeare(root: Path, subset: str, split: str) -> list[Row]:
    text = _need(root, "tinyshakespeare/input.txt", "tinyshakespeare").read_text(encoding="utf-8")
    # nanoGPT's convention: the first 90% of the characters train, the rest validate. A speech belongs to
    # the side where it starts.
    cut = int(0.9 * len(text))
    rows, start = [], 0
    for block in text.split("\n\n"):
        side = "train" if start < cut else "valid"
        start += len(block) + 2
        if block.strip() and split in ("all", side):
            rows.append({"text": block.strip()})
    return rows
