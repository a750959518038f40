"""Training configs of the evaluation models (torch-free, so ``lmcontrol train reward|probe`` build their options
from them without importing torch; see ``lmcontrol.cli.config_options``)."""

from __future__ import annotations

import dataclasses

from lmcontrol import LMControlError


@dataclasses.dataclass(frozen=True)
class RewardTrainConfig:
    """The Bradley-Terry reward model's training (``lmcontrol train reward``; ``lmcontrol.eval.reward_train``)."""

    data: str = "hh-rlhf"  # hh-rlhf, hh-rlhf:SUBSET, or a file with prompt/chosen/rejected
    heldout: float = 0.2  # share of pairs held out for the reported accuracy
    val: float = 0.1  # share of the remaining pairs used for early stopping
    epochs: int = 40  # epochs per head (the best one on the validation part is kept)
    batch_size: int = 64  # pairs per step
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 0.05  # AdamW weight decay
    hidden: int = 64  # hidden units per head
    heads: int = 4  # ensemble size
    dropout: float = 0.3  # dropout in each head
    seed: int = 0  # seed of the split and the heads
    encoder: str | None = None  # sentence encoder (default all-MiniLM-L6-v2)
    limit: int | None = None  # use only the first N pairs (quick runs)

    def __post_init__(self) -> None:
        if not (0 < self.heldout < 1 and 0 < self.val < 1 and self.heldout + self.val < 1):
            raise LMControlError(
                f"heldout and val must be in (0, 1) with a sum < 1, got {self.heldout}, {self.val}"
            )
        if self.epochs < 1 or self.batch_size < 1:
            raise LMControlError("epochs and batch_size must be >= 1")


@dataclasses.dataclass(frozen=True)
class ProbeTrainConfig:
    """A logistic-regression probe on sentence embeddings (``lmcontrol train probe``; ``lmcontrol.eval.probes``)."""

    data: str  # registered data set (sst2, ag_news, jigsaw, ...) or a local .jsonl/.csv file
    text_column: str = "text"  # field with the text
    label_column: str = "label"  # field with the class label
    limit: int | None = None  # random subsample of the training rows (None = all)
    eval_split: str | None = None  # None = the data set's own (sst2 dev, ag_news/jigsaw test) or a holdout
    holdout: float = 0.2  # share of the rows held out when there is no evaluation split
    encoder: str | None = None  # sentence encoder (default all-MiniLM-L6-v2)
    seed: int = 0  # seed of the subsample and the holdout
    cs: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # LogisticRegression C grid
