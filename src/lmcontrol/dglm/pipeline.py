"""The DGLM pipeline: encoder -> semantic diffusion (+ CFG, + probe guidance) -> prompt generator -> frozen decoder.

    pipe = DGLMPipeline.from_pretrained(lm)                     # artifacts/dglm-diffusion + artifacts/dglm-prompter
    out = pipe(["The city council met on Tuesday to"], DGLMSettings(guides=(pipe.guide("sentiment", "positive", 10),)))

It only composes: the networks live in ``dglm.model``, the samplers in ``lmcontrol.diffusion.samplers``, the probe
guidance in ``dglm.guidance``; decoding is the core ``generate`` with a ``DGLMControl`` (``dglm.control``)
supplying per-row KV prefixes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmcontrol import LMControlError
from lmcontrol.controls import ControlSpec, SoftPrompt
from lmcontrol.dglm.control import DGLMControl
from lmcontrol.dglm.guidance import ProbeGuide, guided_denoiser
from lmcontrol.dglm.model import PromptGenerator, SemanticDiffusion
from lmcontrol.diffusion.samplers import sample_ancestral, sample_ddim
from lmcontrol.diffusion.schedule import add_noise
from lmcontrol.settings import ARTIFACTS_DIR

if TYPE_CHECKING:
    from lmcontrol.generation import GenerationConfig, GenerationOutput
    from lmcontrol.models import LanguageModel

log = logging.getLogger(__name__)

DEFAULT_DIFFUSION = ARTIFACTS_DIR / "dglm-diffusion"
DEFAULT_PROMPTER = ARTIFACTS_DIR / "dglm-prompter"
PROBE_ALIASES = {"toxicity": "jigsaw", "toxic": "jigsaw", "sentiment": "sst2", "topic": "ag_news"}
SAMPLERS = ("ddim", "ancestral")
VAR_INTERP = 0.2  # ancestral step variance: exp(0.2 log β + 0.8 log β̃), as DGLM's code does


@dataclasses.dataclass(frozen=True)
class DGLMSettings:
    """How a proposal is sampled and handed to the decoder.

    Args:
        cfg_scale: classifier-free guidance w on the prefix (1 = conditional model, 0 = unconditional).
        noise: σ² the proposal is noised to before the prompt generator (paper default 0.05; 1 = pure noise,
            i.e. the decoder falls back on plain AR continuation).
        steps: diffusion sampling steps.
        sampler: "ddim" (deterministic given z_T) or "ancestral".
        guides: probe guides (``DGLMPipeline.guide``).
        seed: seeds z_T, the proposal noise and the guidance's Monte-Carlo samples.
    """

    cfg_scale: float = 1.0
    noise: float = 0.05
    steps: int = 25
    sampler: str = "ddim"
    guides: tuple[ProbeGuide, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if not math.isfinite(self.cfg_scale) or self.cfg_scale < 0:
            raise LMControlError(f"DGLM cfg scale must be a finite number >= 0, got {self.cfg_scale}")
        if not (math.isfinite(self.noise) and 0.0 <= self.noise <= 1.0):
            raise LMControlError(f"DGLM noise σ² must be in [0, 1], got {self.noise}")
        if self.steps < 1:
            raise LMControlError(f"DGLM steps must be >= 1, got {self.steps}")
        if self.sampler not in SAMPLERS:
            raise LMControlError(f"unknown DGLM sampler '{self.sampler}' (known: {', '.join(SAMPLERS)})")


class DGLMPipeline:
    """Encoder + ``SemanticDiffusion`` + ``PromptGenerator`` for one frozen decoder."""

    def __init__(self, lm: LanguageModel, diffusion: SemanticDiffusion, prompter: PromptGenerator, encoder: Any):
        if (
            diffusion.config.encoder != prompter.config.encoder
            or diffusion.config.embed_dim != prompter.config.embed_dim
        ):
            raise LMControlError(
                f"DGLM diffusion model was trained on encoder '{diffusion.config.encoder}' "
                f"({diffusion.config.embed_dim}-d) but the prompt generator on '{prompter.config.encoder}' "
                f"({prompter.config.embed_dim}-d)"
            )
        if not torch.allclose(diffusion.space.mean, prompter.space.mean, atol=1e-3):
            log.warning("DGLM diffusion and prompt generator were standardised with different statistics")
        self.lm, self.diffusion, self.prompter, self.encoder = lm, diffusion, prompter, encoder

    @classmethod
    def from_pretrained(
        cls, lm: LanguageModel, diffusion: str | Path | None = None, prompter: str | Path | None = None
    ) -> DGLMPipeline:
        """Load both artifacts, refusing ones made for another decoder or encoder (the message names both)."""
        from lmcontrol.models import encoder_id, load_encoder

        d_path, p_path = Path(diffusion or DEFAULT_DIFFUSION), Path(prompter or DEFAULT_PROMPTER)
        for path, what, cmd in (
            (d_path, "diffusion model", "dglm-diffusion"),
            (p_path, "prompt generator", "dglm-prompter"),
        ):
            if not path.is_dir():
                raise LMControlError(
                    f"DGLM {what} not found at {path}: train it with lmcontrol train {cmd} --out {path}"
                )
        prompter_net = PromptGenerator.from_pretrained(p_path, model_name=lm.info.name, hidden_size=lm.info.hidden_size)
        prompter_net.check_model(lm)
        diffusion_net = SemanticDiffusion.from_pretrained(d_path, model_name=prompter_net.config.encoder)
        name = prompter_net.config.encoder
        encoder = load_encoder(None if name == encoder_id(None) else name)
        return cls(lm, diffusion_net, prompter_net, encoder)

    # -- the three stages -------------------------------------------------------------------------------

    @torch.no_grad()
    def unit_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm encoder embeddings (B, d) of texts."""
        unit = self.encoder.encode(
            list(texts), convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False
        )
        return unit.float().cpu()

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Standardised embeddings (B, d) of texts (the diffusion model's space)."""
        return self.diffusion.space.standardise(self.unit_embeddings(texts))

    @torch.no_grad()
    def propose(
        self, prefixes: Sequence[str], settings: DGLMSettings, unit: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sample continuation embeddings x̂0 (B, d, standardised) for the prefixes (guidance enables gradients
        locally); ``unit``: the prefixes' unit embeddings when the caller already has them."""
        g = torch.Generator().manual_seed(settings.seed)
        context = self.diffusion.space.standardise(unit if unit is not None else self.unit_embeddings(prefixes))
        z_T = torch.randn(context.shape, generator=g)
        denoiser = guided_denoiser(self.diffusion, context, settings.cfg_scale, settings.guides, generator=g)
        timesteps = self.diffusion.schedule.timesteps(settings.steps)
        if settings.sampler == "ddim":
            return sample_ddim(denoiser, z_T, timesteps)
        return sample_ancestral(denoiser, z_T, timesteps, generator=g, var_interp=VAR_INTERP)

    @torch.no_grad()
    def soft_prompt(
        self,
        proposal: torch.Tensor,
        noise: float,
        seed: int = 0,
        prefixes: Sequence[str] | None = None,
        unit: torch.Tensor | None = None,
    ) -> SoftPrompt:
        """The decoder's KV prefix for proposals (B, d), noised to σ² = ``noise`` first (paper §3.1); a generator
        with ``prefix_input`` also reads the embeddings of the ``prefixes`` the decoder continues (``unit``: those
        embeddings, when the caller already has them)."""
        b = proposal.shape[0]
        a2 = torch.full((b, 1), max(1.0 - noise, 1e-4))
        eps = torch.randn(proposal.shape, generator=torch.Generator().manual_seed(seed + 1))
        z = add_noise(self.prompter.space.standardise(self.diffusion.space.to_unit(proposal)), eps, a2)
        context = None
        if self.prompter.config.prefix_input:
            if unit is None and (prefixes is None or len(prefixes) != b):
                raise LMControlError("this DGLM prompt generator reads the prefixes: pass one per proposal")
            context = self.prompter.space.standardise(unit if unit is not None else self.unit_embeddings(prefixes))
        kv = self.prompter.past_key_values(z, a2, dtype=self.lm.model.dtype, prefix=context)
        return SoftPrompt(mask=torch.ones(b, self.prompter.config.length, dtype=torch.bool), kv=kv)

    def __call__(
        self, prompts: Sequence[str], settings: DGLMSettings | None = None, config: GenerationConfig | None = None
    ) -> GenerationOutput:
        from lmcontrol.generation import GenerationConfig, generate

        config = config or GenerationConfig(max_new_tokens=32, chat=False)
        return generate(self.lm, prompts, config, [DGLMControl(self, settings or DGLMSettings())])

    # -- guides -------------------------------------------------------------------------------------------

    def guide(self, probe: str, label: str, weight: float, away: bool = False) -> ProbeGuide:
        """A ``ProbeGuide`` from a probe name (toxicity / sentiment / topic / sst2 / ag_news / jigsaw) or path."""
        from lmcontrol.eval.probes import KNOWN_PROBES, load_probe

        key = PROBE_ALIASES.get(probe.lower(), probe)
        if key.lower() not in KNOWN_PROBES and not Path(key).is_dir():
            known = ", ".join(sorted({*PROBE_ALIASES, *KNOWN_PROBES}))
            raise LMControlError(f"unknown probe '{probe}' (known: {known}, or a probe artifact directory)")
        p = load_probe(key)
        if p.config.encoder != self.prompter.config.encoder:
            raise LMControlError(
                f"probe '{probe}' reads encoder '{p.config.encoder}', but DGLM uses '{self.prompter.config.encoder}'"
            )
        return ProbeGuide(probe=p, label=p.label_index(label), weight=weight, away=away, name=f"{probe}:{label}")


# -- the --control dglm:... spec: a pipeline and its control ----------------------------------------------


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
