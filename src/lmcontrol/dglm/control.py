"""``--control dglm``: the DGLM pipeline as a ``Control`` that hands the frozen decoder a per-row KV prefix.

``--control`` spec (``lmcontrol generate --no-chat --prompt ... --control 'dglm:...'``)::

    dglm[:diffusion=DIR,prompter=DIR,guide=PROBE:LABEL:W,avoid=PROBE:LABEL:W,cfg=S,noise=σ²,steps=N,
         sampler=ddim|ancestral,seed=K]

``guide`` pulls the proposal toward a probe label, ``avoid`` pushes it away (both repeatable and composable);
PROBE is ``toxicity``, ``sentiment``, ``topic`` or a probe artifact directory; e.g.
``dglm:avoid=toxicity:toxic:20`` or ``dglm:guide=sentiment:positive:10,guide=topic:Sports:10``. The spec is parsed
by ``lmcontrol.dglm.pipeline.dglm_from_spec`` (it builds a pipeline, then this control around it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmcontrol import LMControlError
from lmcontrol.controls import Control, Rows, SoftPrompt

if TYPE_CHECKING:
    from lmcontrol.dglm.pipeline import DGLMPipeline, DGLMSettings
    from lmcontrol.models import LanguageModel


class DGLMControl(Control):
    """Per row: propose a continuation embedding for the row's prompt, hand the decoder its KV prefix."""

    name = "dglm"
    chat = False  # the prompt generator was trained on raw text continuation

    def __init__(self, pipeline: DGLMPipeline, settings: DGLMSettings) -> None:
        self.pipeline, self.settings = pipeline, settings  # read-only after construction: safe to share

    def setup(self, lm: LanguageModel) -> None:
        if lm.info.name != self.pipeline.prompter.base_model:
            raise LMControlError(
                f"DGLM prompt generator was trained for '{self.pipeline.prompter.base_model}', not '{lm.info.name}'"
            )

    def soft_prompt(self, rows: Rows) -> SoftPrompt | None:
        # best-of-N rows of one prompt get different proposals: seed by row position
        unit = self.pipeline.unit_embeddings(rows.prompts)  # encoded once: the diffusion and the generator read them
        proposal = self.pipeline.propose(rows.prompts, self.settings, unit=unit)
        return self.pipeline.soft_prompt(proposal, self.settings.noise, self.settings.seed, unit=unit)
