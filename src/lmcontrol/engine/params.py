"""Per-request sampling settings (vLLM's ``SamplingParams``): every row of a batch carries its own."""

from __future__ import annotations

import dataclasses
import math

from lmcontrol import LMControlError


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How one request picks its tokens. ``temperature == 0`` means greedy.

    Attributes:
        max_new_tokens: tokens to generate at most (>= 1).
        temperature: softmax temperature; 0 = greedy argmax.
        top_k: keep the k most likely tokens before sampling (0 = off).
        top_p: keep the smallest set of tokens whose mass reaches top_p (1 = off).
        seed: seeds the request's own generator (row j of a best-of-N request uses (seed, j)), so a row's text
            never depends on its batch-mates; None = nondeterministic.
        stop: strings that end the text (not included in it); each must be non-empty.
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise LMControlError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if (
            not isinstance(self.temperature, (int, float))
            or not math.isfinite(self.temperature)
            or self.temperature < 0
        ):
            raise LMControlError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise LMControlError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not isinstance(self.top_p, (int, float)) or not (0 < self.top_p <= 1):
            raise LMControlError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise LMControlError(f"seed must be an integer >= 0 or None, got {self.seed!r}")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if any(not isinstance(s, str) or not s for s in stop):
            raise LMControlError("stop strings must be non-empty strings")
        object.__setattr__(self, "stop", stop)
