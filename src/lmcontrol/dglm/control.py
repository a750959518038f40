"""``--control dglm``: the DGLM pipeline as a ``Control`` that hands the frozen decoder a per-row KV prefix.

``--control`` spec (``lmcontrol generate --no-chat --prompt ... --control 'dglm:...'``)::

    dglm[:diffusion=DIR,prompter=DIR,guide=PROBE:LABEL:W,avoid=PROBE:LABEL:W,cfg=S,noise=σ²,steps=N,
         sampler=ddim|ancestral,seed=K]

``guide`` pulls the proposal toward a probe label, ``avoid`` pushes it away (both repeatable and composable);
PROBE is ``toxicity``, ``sentiment``, ``topic`` or a probe artifact directory; e.g.
``dglm:avoid=toxicity:toxic:20`` or ``dglm:guide=sentiment:positive:10,guide=topic:Sports:10``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from lmcontrol import LMControlError
from lmcontrol.controls import Control, ControlSpec, Rows, SoftPrompt
from lmcontrol.dglm.guidance import ProbeGuide
from lmcontrol.dglm.pipeline import DGLMPipeline, DGLMSettings

if TYPE_CHECKING:
    from lmcontrol.models import LanguageModel


class DGLMControl(Control):
    """Per row: propose a continuation embedding for the row's prompt, hand the decoder its KV prefix."""

    name = "dglm"
    chat = False  # the prompt generator was trained on raw text continuation

    def __init__(self, pipeline: DGLMPipeline, settings: DGLMSettings) -> None:
        self.pipeline, self.settings = pipeline, settings
        self.last_proposal: torch.Tensor | None = None
        self.seconds = 0.0

    def setup(self, lm: LanguageModel) -> None:
        if lm.info.name != self.pipeline.prompter.base_model:
            raise LMControlError(
                f"DGLM prompt generator was trained for '{self.pipeline.prompter.base_model}', not '{lm.info.name}'"
            )

    def soft_prompt(self, rows: Rows) -> SoftPrompt | None:
        t0 = time.perf_counter()
        # best-of-N rows of one prompt get different proposals: seed by row position
        proposal = self.pipeline.propose(rows.prompts, self.settings)
        self.last_proposal = proposal
        sp = self.pipeline.soft_prompt(proposal, self.settings.noise, self.settings.seed)
        self.seconds = time.perf_counter() - t0
        return sp


def _guides(spec: ControlSpec, pipe: DGLMPipeline) -> tuple[ProbeGuide, ...]:
    out = []
    for key, away in (("guide", False), ("avoid", True)):
        for raw in spec.values(key):
            parts = raw.split(":")
            if len(parts) not in (2, 3) or not all(parts):
                raise LMControlError(f"--control {spec.text}: {key}={raw!r} must be PROBE:LABEL[:WEIGHT]")
            try:
                weight = float(parts[2]) if len(parts) == 3 else 10.0
            except ValueError:
                raise LMControlError(
                    f"--control {spec.text}: weight {parts[2]!r} in {key}={raw} is not a number"
                ) from None
            out.append(pipe.guide(parts[0], parts[1], weight, away=away))
    return tuple(out)


def dglm_from_spec(spec: ControlSpec, lm: LanguageModel) -> DGLMControl:
    spec.check_keys(("diffusion", "prompter", "guide", "avoid", "cfg", "noise", "steps", "sampler", "seed"))
    if spec.args:
        raise LMControlError(f"--control {spec.text}: DGLM takes key=value options only (e.g. dglm:noise=0.05)")
    settings = dict(
        cfg_scale=spec.float("cfg", 1.0, min_value=0.0),
        noise=spec.float("noise", 0.05, min_value=0.0),
        steps=spec.int("steps", 25, min_value=1),
        sampler=spec.str("sampler", "ddim") or "ddim",
        seed=spec.int("seed", 0),
    )
    DGLMSettings(**settings)  # type: ignore[arg-type]  # validate before loading anything
    pipe = DGLMPipeline.from_pretrained(lm, spec.str("diffusion"), spec.str("prompter"))
    return DGLMControl(pipe, DGLMSettings(**settings, guides=_guides(spec, pipe)))  # type: ignore[arg-type]
