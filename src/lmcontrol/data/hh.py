"""HH-RLHF (Bai et al. 2022): chosen/rejected dialogues cut at the last shared assistant turn."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from lmcontrol.data.readers import (
    Row,
    _need,
    _read_jsonl,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------
# HH-RLHF

_HH_SUBSETS = ("harmless-base", "helpful-base")
_ASSISTANT = "\n\nAssistant:"
_TURN_RE = re.compile(r"\n\n(Human|Assistant):")


def _hh_row(chosen: str, rejected: str, subset: str) -> Row:
    # The final replies are what differs, so the prompt ends at the last marker both dialogues share. Cutting
    # at rfind() of chosen alone would go wrong when a reply itself contains "\n\nAssistant:" (a few do).
    common = os.path.commonprefix([chosen, rejected])
    end = common.rfind(_ASSISTANT) + len(_ASSISTANT)
    if end < len(_ASSISTANT):  # no shared marker at all; never happens in the shipped files
        end = chosen.rfind(_ASSISTANT) + len(_ASSISTANT)
    prompt = chosen[:end]
    parts = _TURN_RE.split(prompt)  # ["", "Human", " text", "Assistant", " text", ..., "Assistant", ""]
    turns = [
        {"role": "user" if who == "Human" else "assistant", "content": text.strip()}
        for who, text in zip(parts[1::2], parts[2::2], strict=True)
    ]
    if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns.pop()  # the empty slot the model is asked to fill
    first_human = next((t["content"] for t in turns if t["role"] == "user"), "")
    return {
        "prompt": prompt,
        "chosen": chosen[end:].strip(),
        "rejected": rejected[end:].strip(),
        "subset": subset,
        "first_human": first_human,
        "turns": turns,
        "chosen_full": chosen,
        "rejected_full": rejected,
    }


def _load_hh(root: Path, subset: str, split: str) -> list[Row]:
    rows: list[Row] = []
    for sub in _HH_SUBSETS if subset == "all" else (subset,):
        for rec in _read_jsonl(_need(root, f"hh-rlhf/{sub}/test.jsonl.gz", "hh-rlhf")):
            rows.append(_hh_row(rec["chosen"], rec["rejected"], sub))
    return rows
