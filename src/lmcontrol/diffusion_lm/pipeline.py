"""The Diffusion-LM pipeline: sample sentences, optionally under a ``ControlTarget``. It only composes: the network
and its denoiser (imputation, clamping) live in ``model``, the objectives in ``targets``, the samplers and the
gradient corrector in ``lmcontrol.diffusion``.

    pipe = DiffusionLMPipeline.from_pretrained("artifacts/diffusion-lm-e2e", "artifacts/diffusion-lm-e2e-classifier")
    pipe(4, target=ControlTarget(attribute=("food", "Italian")), settings=SampleSettings(steps=100))
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from lmcontrol import LMControlError
from lmcontrol.diffusion.guidance import GradientCorrector
from lmcontrol.diffusion.samplers import Denoiser, get_sampler
from lmcontrol.diffusion_lm.classifiers import LatentClassifier
from lmcontrol.diffusion_lm.config import SampleSettings
from lmcontrol.diffusion_lm.model import DiffusionLM
from lmcontrol.diffusion_lm.spans import check_span
from lmcontrol.diffusion_lm.targets import (
    ControlTarget,
    Objective,
    attribute_objective,
    compose,
    pos_objective,
    span_objective,
    template,
)


class DiffusionLMPipeline:
    """Sample text from a Diffusion-LM, optionally under a ``ControlTarget``."""

    def __init__(
        self,
        model: DiffusionLM,
        classifier: LatentClassifier | None = None,
        span_classifier: LatentClassifier | None = None,
    ) -> None:
        if model.vocab is None:
            raise LMControlError("the Diffusion-LM has no vocabulary attached")
        self.model, self.classifier, self.vocab = model.eval(), classifier, model.vocab
        self.span_classifier = span_classifier
        for clf in (classifier, span_classifier):
            if clf is not None:
                clf.eval().requires_grad_(False)
        model.requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        classifier_dir: str | Path | None = None,
        span_classifier_dir: str | Path | None = None,
    ) -> DiffusionLMPipeline:
        """Load the model and (optionally) the attribute/POS classifier and the syntax-span classifier."""
        model = DiffusionLM.load(model_dir)
        clfs = []
        for path in (classifier_dir, span_classifier_dir):
            clf = LatentClassifier.from_pretrained(path) if path is not None else None
            if clf is not None and clf.config.embed_dim != model.config.embed_dim:
                raise LMControlError(
                    f"classifier {path} expects d={clf.config.embed_dim}, model has {model.config.embed_dim}"
                )
            clfs.append(clf)
        return cls(model, *clfs)

    def _classifier(self, what: str) -> LatentClassifier:
        if what == "syntax-span":
            for clf in (self.span_classifier, self.classifier):
                if clf is not None and clf.config.spans:
                    return clf
            raise LMControlError("syntax-span control needs a span classifier (span_classifier_dir)")
        if self.classifier is None:
            raise LMControlError(f"{what} control needs a classifier (classifier_dir)")
        return self.classifier

    def prepare(
        self, target: ControlTarget, n: int, clamp: bool = True
    ) -> tuple[Denoiser, Objective | None, torch.Tensor | None]:
        """Validate ``target`` and build (denoiser, objective, frozen mask (n, L)) for it."""
        L = self.model.config.seq_len
        objectives = []
        if target.attribute is not None:
            field, value = target.attribute
            objectives.append(attribute_objective(self._classifier("attribute"), field, value))
        if target.pos is not None:
            objectives.append(pos_objective(self._classifier("POS"), target.pos, L))
        if target.span is not None:
            span = check_span(target.span, L)
            n_words = len(target.pos) if target.pos is not None else target.length
            if n_words is not None and span[1] >= n_words:
                raise LMControlError(f"syntax span {span} does not fit in {n_words} words")
            if target.infilling:
                raise LMControlError("syntax-span control cannot be combined with infilling")
            objectives.append(span_objective(self._classifier("syntax-span"), span))
        fixed = template(target, self.vocab, L)
        frozen = None
        denoiser = self.model.denoiser(clamp=clamp)
        if fixed is not None:
            device = self.model.word_embedding.weight.device
            ids, frozen = fixed[0].to(device).expand(n, L), fixed[1].to(device).expand(n, L)  # (n, L)
            denoiser = self.model.denoiser(clamp=clamp, known_x0=self.model.embed(ids), mask=frozen)
        objective = compose(*objectives) if objectives else None
        return denoiser, objective, frozen

    @torch.no_grad()
    def __call__(
        self,
        n: int = 8,
        *,
        target: ControlTarget | None = None,
        settings: SampleSettings = SampleSettings(),
        seed: int = 0,
    ) -> list[str]:
        """``n`` sentences (E2E tokenization) sampled under ``target`` (``settings.mbr`` candidates each)."""
        if n < 1:
            raise LMControlError(f"n must be >= 1, got {n}")
        texts = self._sample(n * settings.mbr, target or ControlTarget(), settings, seed)
        return texts if settings.mbr == 1 else [mbr_select(texts[i :: n]) for i in range(n)]

    def _sample(self, n: int, target: ControlTarget, settings: SampleSettings, seed: int) -> list[str]:
        denoiser, objective, frozen = self.prepare(target, n, settings.clamp)
        corrector = None
        if objective is not None and settings.guidance_steps > 0:
            corrector = GradientCorrector(
                objective,
                steps=settings.guidance_steps,
                step_size=settings.step_size,
                fluency=settings.fluency,
                frozen=frozen,
            )
        cfg = self.model.config
        device = self.model.word_embedding.weight.device
        g = torch.Generator(device=device).manual_seed(seed)
        x_T = torch.randn((n, cfg.seq_len, cfg.embed_dim), generator=g, device=device)
        extra = {"noise_scale": settings.noise_scale} if settings.noise_scale != 1.0 else {}
        x0 = get_sampler(settings.sampler)(
            denoiser, x_T, self.model.timesteps(settings.steps), corrector=corrector, generator=g, **extra
        )
        return self.model.decode(x0, None if frozen is None else ~frozen)

    def timed(
        self,
        n: int,
        *,
        target: ControlTarget | None = None,
        settings: SampleSettings = SampleSettings(),
        seed: int = 0,
    ) -> tuple[list[str], float]:
        """(texts, seconds) for one call of the pipeline with the same arguments."""
        t0 = time.perf_counter()
        texts = self(n, target=target, settings=settings, seed=seed)
        return texts, time.perf_counter() - t0


def mbr_select(candidates: list[str]) -> str:
    """The candidate with the highest mean sentence BLEU against the others, i.e. the lowest expected risk
    1 − BLEU under the empirical distribution of the candidates (MBR, Kumar & Byrne 2004)."""
    import sacrebleu

    if len(candidates) == 1:
        return candidates[0]
    gains = [
        sum(sacrebleu.sentence_bleu(c, [o]).score for j, o in enumerate(candidates) if j != i)
        for i, c in enumerate(candidates)
    ]
    return candidates[max(range(len(candidates)), key=gains.__getitem__)]
