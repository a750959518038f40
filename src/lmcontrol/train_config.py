"""``TrainConfig``: the optimisation settings every trainer shares (torch-free, so a CLI can build its
``--steps``/``--lr``/``--seed`` options from it without importing torch; see ``lmcontrol.cli.config_options``)."""

from __future__ import annotations

import dataclasses
import math

from lmcontrol import LMControlError


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every trainer."""

    steps: int = 1000  # optimiser steps
    lr: float = 1e-3  # AdamW peak learning rate (linear warm-up, cosine decay)
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 0  # linear warm-up steps
    grad_clip: float | None = 1.0  # clip the gradient norm to this (None = off)
    checkpoint_every: int = 200  # steps between checkpoints (OUT/checkpoint; --resume continues from the last)
    log_every: int = 50  # steps per logged mean loss
    seed: int = 0  # seed of initialisation, batches and sampling
    progress: bool = True  # show a progress bar

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise LMControlError(f"steps must be >= 1, got {self.steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise LMControlError(f"learning rate must be a positive number, got {self.lr}")
        if self.checkpoint_every < 1:
            raise LMControlError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
