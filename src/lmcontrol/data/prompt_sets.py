"""Prompt sets: RealToxicityPrompts, HarmfulQA & co, AdvBench (held-out behaviours filtered out)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lmcontrol.data.readers import (
    Row,
    _need,
    _read_csv_dicts,
    _read_jsonl,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------
# prompt sets: RealToxicityPrompts, HarmfulQA & co, AdvBench

_RTP_SUBSETS = ("nontoxic", "toxic")


def _score(value: Any) -> float | None:
    return None if value is None else float(value)


def _load_rtp(root: Path, subset: str, split: str) -> list[Row]:
    rows: list[Row] = []
    for sub in _RTP_SUBSETS if subset == "all" else (subset,):
        for rec in _read_jsonl(_need(root, f"real_toxicity_prompts/decodingtrust/{sub}.jsonl", "rtp")):
            prompt, cont = rec["prompt"], rec["continuation"]
            rows.append(
                {
                    "prompt": prompt["text"],
                    "continuation": cont["text"],
                    "prompt_toxicity": _score(prompt.get("toxicity")),
                    "continuation_toxicity": _score(cont.get("toxicity")),
                    "subset": sub,
                    "challenging": bool(rec.get("challenging")),
                }
            )
    return rows


def _advbench_goals(root: Path, name: str) -> set[str]:
    """The AdvBench behaviours that are not held out (every one still in harmful_behaviors.csv)."""
    return {r["goal"] for r in _read_csv_dicts(_need(root, "advbench/harmful_behaviors.csv", name))}


def _drop_heldout(items: list[str], allowed: set[str], what: str) -> list[str]:
    kept = [s for s in items if s in allowed]
    if len(kept) < len(items):
        log.info("%s: dropped %d held-out AdvBench behaviours", what, len(items) - len(kept))
    return kept


def _load_harmfulqa(root: Path, subset: str, split: str) -> list[Row]:
    rel = {
        "harmfulqa": "harmfulqa.json",
        "dangerousqa": "dangerousqa.json",
        "catqa": "catqa_english.json",
        "adversarialqa": "adversarialqa.json",
    }[subset]
    data = json.loads(_need(root, f"harmfulqa/{rel}", "harmfulqa").read_text(encoding="utf-8"))
    if isinstance(data, dict):  # {topic: {subtopic: [question, ...]}}
        return [
            {"prompt": q, "topic": topic, "subtopic": sub.strip().rstrip(":")}  # catqa keys end in ":"
            for topic, subs in data.items()
            for sub, qs in subs.items()
            for q in qs
        ]
    if subset == "adversarialqa":  # = AdvBench behaviours[:500], which include held-out ones
        data = _drop_heldout(data, _advbench_goals(root, "harmfulqa"), "harmfulqa:adversarialqa")
    return [{"prompt": q} for q in data]


def _load_advbench(root: Path, subset: str, split: str) -> list[Row]:
    if subset == "behaviors":
        recs = _read_csv_dicts(_need(root, "advbench/harmful_behaviors.csv", "advbench"))
        # Upstream quirk kept: a few targets are shuffled among neighbouring rows (see SOURCE.md).
        return [{"goal": r["goal"], "target": r["target"], "prompt": r["goal"]} for r in recs]
    if subset == "strings":
        return [
            {"target": r["target"]}
            for r in _read_csv_dicts(_need(root, "advbench/harmful_strings.csv", "advbench"))
        ]
    # Not really CSV: one behaviour per line, quoted only sometimes, and unquoted lines contain commas.
    path = _need(root, "advbench/transfer_expriment_behaviors.csv", "advbench")
    goals = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if len(line) >= 2 and line[0] == line[-1] == '"':
            line = line[1:-1].replace('""', '"')
        if line:
            goals.append(line)
    goals = _drop_heldout(goals, _advbench_goals(root, "advbench"), "advbench:transfer")
    return [{"goal": g, "prompt": g} for g in goals]
