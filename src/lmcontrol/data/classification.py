"""Classification sets: SST-2, AG News, Jigsaw toxic comments."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from lmcontrol.data.readers import (
    DataError,
    Row,
    _need,
    _read_csv,
    _read_csv_dicts,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------
# classification sets: SST-2, AG News, Jigsaw


def _load_sst2(root: Path, subset: str, split: str) -> list[Row]:
    rel = {"train": "train_full.tsv", "dev": "dev.tsv", "test": "test-labeled.tsv"}[split]
    # PTB-tokenized sentences contain stray quotes, so no CSV quoting.
    recs = _read_csv(_need(root, f"sst2/{rel}", "sst2"), delimiter="\t", quoting=csv.QUOTE_NONE)
    return [{"text": text.strip(), "label": int(label)} for text, label in recs[1:]]  # [0] is the header


def _load_ag_news(root: Path, subset: str, split: str) -> list[Row]:
    names = _need(root, "ag_news/classes.txt", "ag_news").read_text(encoding="utf-8").split("\n")
    names = [n.strip() for n in names if n.strip()]
    if split == "test":
        recs = _read_csv(_need(root, "ag_news/test.csv", "ag_news"))
        # Text is kept as upstream (escaped "\" newlines, " #39;" entities) so results compare with papers.
        return [
            {
                "text": f"{title} {desc}",
                "label": int(cls) - 1,
                "label_name": names[int(cls) - 1],
                "title": title,
                "description": desc,
            }
            for cls, title, desc in recs
        ]
    path = _need(root, "ag_news/alps_train_subset/dev.tsv", "ag_news")
    rows: list[Row] = []
    for desc, name in _read_csv(path, delimiter="\t", quoting=csv.QUOTE_NONE):
        if name not in names:
            raise DataError(f"data set 'ag_news' is malformed: unknown label {name!r} in {path}")
        rows.append({"text": desc, "label": names.index(name), "label_name": name})
    return rows


_JIGSAW_LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")


def _load_jigsaw(root: Path, subset: str, split: str) -> list[Row]:
    if subset == "balanced":
        recs = _read_csv(_need(root, "jigsaw_toxic/robtest/test.csv", "jigsaw"))
        return [{"text": text, "toxic": int(label), "label": int(label)} for text, label in recs]
    # The ok/bad pools (train a-c, test a-c; SOURCE.md lists which exist) plus, for train, the random 5k.
    pools = (
        ("a.ok.1k", "b.ok.1k", "a.bad.1k", "b.bad.1k", "c.bad.1k")
        if split == "train"
        else ("a.ok.200", "b.ok.200", "c.ok.200", "a.bad.200", "b.bad.200", "c.bad.200")
    )
    rels = [f"jigsaw_toxic/predibase/data_pools/{split}.{pool}.csv" for pool in pools]
    if split == "train":
        rels.append("jigsaw_toxic/predibase/dataset_subsets/train.5k.csv")
    rows: dict[str, Row] = {}
    for rel in rels:
        # train.5k overlaps the train pools by 152 ids: keep each comment once.
        for rec in _read_csv_dicts(_need(root, rel, "jigsaw")):
            labels = {k: int(rec[k]) for k in _JIGSAW_LABELS}
            # "toxic" is Kaggle's own column; "label" is predibase's is_bad (any of the six labels).
            rows.setdefault(
                rec["id"],
                {"text": rec["comment_text"], **labels, "label": int(any(labels.values())), "id": rec["id"]},
            )
    return list(rows.values())
