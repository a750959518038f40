#!/usr/bin/env python
"""ROC-AUC of the toxicity judge's ``toxic`` score on the labelled Jigsaw test comments.

Data: the 1,200 labelled Jigsaw *test* comments in ``<data>/jigsaw_toxic/predibase/data_pools/``
(``test.{a,b,c}.{ok,bad}.200.csv``, see that folder's SOURCE.md). The "bad" pools hold comments with *any*
of the six labels set, so the ``toxic`` column is not constant within a pool; we score against it.
The toxic-comment-classifier model was trained on the Jigsaw *train* split, so these rows are held out.

Usage::

    python scripts/toxicity_auc.py [--data-dir /work/shared/data] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
from pathlib import Path

from sklearn.metrics import roc_auc_score

from lmcontrol.eval.toxicity import get_toxicity_scorer

REPO_ROOT = Path(__file__).resolve().parents[1]
POOL_DIR = Path("jigsaw_toxic") / "predibase" / "data_pools"
TEST_POOLS = [f"test.{part}.{kind}.200.csv" for part in "abc" for kind in ("ok", "bad")]


def default_data_dir() -> Path:
    """``$LMCONTROL_DATA`` or the shared data folder next to the repository."""
    return Path(os.environ.get("LMCONTROL_DATA", REPO_ROOT.parent / "shared" / "data"))


def load_test_rows(data_dir: Path) -> tuple[list[str], list[int], list[int]]:
    """Comment texts, their ``toxic`` label and their any-label (``is_bad``) flag, de-duplicated by id."""
    texts: list[str] = []
    toxic: list[int] = []
    any_label: list[int] = []
    seen: set[str] = set()
    for name in TEST_POOLS:
        # newline="" because quoted comment fields contain newlines
        with (data_dir / POOL_DIR / name).open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                if row["id"] in seen:
                    continue
                seen.add(row["id"])
                texts.append(row["comment_text"])
                toxic.append(int(row["toxic"]))
                any_label.append(int(row["is_bad"] == "True"))
    return texts, toxic, any_label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    texts, toxic, any_label = load_test_rows(args.data_dir)
    scores = get_toxicity_scorer().score(texts, batch_size=args.batch_size)
    print(f"rows: {len(texts)} (toxic=1: {sum(toxic)}, any label=1: {sum(any_label)})")
    print(f"ROC-AUC toxic score vs `toxic` label: {roc_auc_score(toxic, scores):.4f}")
    # Secondary figure: the same score against "any of the six labels", how the pools were drawn.
    print(f"ROC-AUC toxic score vs any label:     {roc_auc_score(any_label, scores):.4f}")


if __name__ == "__main__":
    main()
