"""The attribute-control baselines DGLM is compared against, built from the same linear probes.

- ``ProbeFudge`` — FUDGE (Yang & Klein 2021, eq. 3): at each step keep the top-k next tokens and add
  w · log p(attribute | continuation so far + candidate) from the probe (on the encoder embedding of each
  candidate continuation) to their log-probabilities; every other token is dropped. A ``TopKRescoring``.
- a steering vector (``lmcontrol.steering.SteeringVector.from_contrast``) and prompting (the ``system`` control)
  are the spine's generic controls and need nothing here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from lmcontrol import LMControlError
from lmcontrol.controls import StepContext
from lmcontrol.steering import TopKRescoring, continuation_texts

if TYPE_CHECKING:
    from lmcontrol.dglm.guidance import ProbeGuide


class ProbeFudge(TopKRescoring):
    """FUDGE-style logit guidance with linear probes on the encoder embedding of each candidate continuation."""

    name = "probe-fudge"
    chat = False

    def __init__(self, guides: Sequence[ProbeGuide], encoder: object, topk: int = 8) -> None:
        if topk < 2:
            raise LMControlError(f"FUDGE top-k must be >= 2, got {topk}")
        self.guides, self.encoder = list(guides), encoder
        super().__init__(self.attribute_log_prob, top_k=topk, lm_term="logprobs")

    @torch.no_grad()
    def attribute_log_prob(self, candidates: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """−Σ_i w_i L_i (B, k): the guides' weighted log-probabilities of each candidate continuation."""
        b, k = candidates.shape
        unit = self.encoder.encode(  # type: ignore[attr-defined]
            continuation_texts(candidates, ctx),
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
            batch_size=128,
        )
        unit = unit.float().cpu().unsqueeze(1)  # (B*k, n=1, d): ProbeGuide.loss averages over n samples
        return -sum(g.weight * g.loss(unit).view(b, k) for g in self.guides)  # type: ignore[return-value]
