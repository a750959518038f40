"""E2E NLG: the raw release, the PrefixTuning tokenized copy, and Diffusion-LM's control targets."""

from __future__ import annotations

import logging
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lmcontrol.data.readers import (
    DataError,
    Row,
    _need,
    _read_csv_dicts,
    _read_jsonl,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------
# E2E

_E2E_TAR = "e2e/neural-template-gen/e2e_aligned.tar.gz"
_E2E_TAR_SLOT_RE = re.compile(r"__start_(\w+)__ (.*?) __end_\1__")
_E2E_RAW_SLOT_RE = re.compile(r"\s*([^,\[]+?)\s*\[([^\]]*)\]")
# Slot names differ between the three copies; `fields` always uses the raw release's names.
_E2E_TAR_TO_RAW = {"customerrating": "customer rating"}
_E2E_PT_TO_RAW = {"Type": "eatType", "price": "priceRange", "family friendly": "familyFriendly"}
_E2E_RAW_TO_PT = {v: k for k, v in _E2E_PT_TO_RAW.items()}
_E2E_CONTROL_FILES = {
    "attribute": "target_attribute.json",
    "pos": "target_pos.json",
    "spans": "target_spans.json",
    "pos_attr": "target_compose_pos_attr.json",
}


def _e2e_detok_value(value: str) -> str:
    # Only price values are tokenized differently from the raw MRs: "£ 20 - 25" -> "£20-25".
    return re.sub(r"£ (?=\d)", "£", value).replace(" - ", "-")


def _e2e_mr(fields: dict[str, str]) -> str:
    return ", ".join(f"{k}[{v}]" for k, v in fields.items())


def _e2e_src(tok_fields: dict[str, str]) -> str:
    """The PrefixTuning table for tokenized values keyed by raw slot names."""
    return " | ".join(f"{_E2E_RAW_TO_PT.get(k, k)} : {v}" for k, v in tok_fields.items())


def _e2e_train(root: Path) -> list[Row]:
    path = _need(root, _E2E_TAR, "e2e")
    # Read the two members into memory: the tarball must never be extracted next to the code.
    with tarfile.open(path, "r:gz") as tar:
        members = {}
        for member in ("src_train.txt", "train.txt"):
            f = tar.extractfile(f"e2e_aligned/{member}")
            if f is None:
                raise DataError(f"data set 'e2e' is malformed: {path} has no e2e_aligned/{member}")
            members[member] = f.read().decode("utf-8").splitlines()
    srcs, tgts = members["src_train.txt"], members["train.txt"]
    if len(srcs) != len(tgts):
        raise DataError(f"data set 'e2e' is malformed: {path} has {len(srcs)} MRs but {len(tgts)} sentences")
    rows: list[Row] = []
    for src, tgt in zip(srcs, tgts, strict=True):
        tok = {_E2E_TAR_TO_RAW.get(k, k): v for k, v in _E2E_TAR_SLOT_RE.findall(src.strip())}
        fields = {k: _e2e_detok_value(v) for k, v in tok.items()}
        # "The Vaults pub ... . <eos>|||0,2,0 2,3,1" -> drop the end marker and the alignment spans.
        text = tgt.split("<eos>", 1)[0].split("|||", 1)[0].strip()
        rows.append(
            {
                "mr": _e2e_mr(fields),
                "fields": fields,
                "text": text,
                "references": [text],
                "src": _e2e_src(tok),
            }
        )
    return rows


def _group_refs(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """MR -> its references, in first-seen order (dicts keep insertion order)."""
    groups: dict[str, list[str]] = {}
    for mr, ref in pairs:
        groups.setdefault(mr, []).append(ref)
    return groups


def _e2e_raw(root: Path, split: str) -> list[Row]:
    rel = {"dev": "e2e/e2e-dataset/devset.csv", "test": "e2e/e2e-dataset/testset_w_refs.csv"}[split]
    recs = _read_csv_dicts(_need(root, rel, "e2e"))
    groups = _group_refs((r["mr"], r["ref"]) for r in recs)
    return [
        {"mr": mr, "fields": {k: v for k, v in _E2E_RAW_SLOT_RE.findall(mr)}, "references": refs}
        for mr, refs in groups.items()
    ]


def _e2e_tokenized(root: Path, split: str) -> list[Row]:
    rel = {"valid": "e2e/prefixtuning/src1_valid.txt", "test": "e2e/prefixtuning/src1_test.txt"}[split]
    lines = _need(root, rel, "e2e").read_text(encoding="utf-8").splitlines()
    # Each line: "name : Alimentum | area : city centre||There is a place in the city centre , ... ."
    groups = _group_refs(
        (src.strip(), ref.strip()) for src, _, ref in (line.partition("||") for line in lines if line.strip())
    )
    rows: list[Row] = []
    for src, refs in groups.items():
        pairs = (kv.split(" : ", 1) for kv in src.split(" | "))
        fields = {_E2E_PT_TO_RAW.get(k, k): _e2e_detok_value(v) for k, v in pairs}
        rows.append({"mr": _e2e_mr(fields), "fields": fields, "references": refs, "src": src})
    return rows


def _control_row(rec: Any) -> Row:
    row: Row = dict(rec) if isinstance(rec, dict) else {"attr": rec}
    if "words_" in row:
        row["text"] = " ".join(w for w in row["words_"] if w not in ("START", "END", "\n"))
    if "attr" in row:
        attr = row["attr"]
        cut = attr.index(":") if ":" in attr else 0
        key = " ".join(attr[:cut])
        row["field"] = _E2E_PT_TO_RAW.get(key, key)
        row["value"] = " ".join(attr[cut + 1 :])
        row.setdefault("text", " ".join(attr))
    return row


def _load_e2e(root: Path, subset: str, split: str) -> list[Row]:
    if subset == "control":
        path = _need(root, f"e2e/diffusion-lm/control_target/{_E2E_CONTROL_FILES[split]}", "e2e")
        return [_control_row(rec) for rec in _read_jsonl(path)]
    if split == "train":
        return _e2e_train(root)
    return _e2e_raw(root, split) if subset == "raw" else _e2e_tokenized(root, split)
