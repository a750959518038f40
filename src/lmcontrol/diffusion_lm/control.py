"""Plug-and-play control of a trained Diffusion-LM (Li et al. 2022 §5) and the pipeline that composes it.

- **Classifier guidance** (§5.2, Eq. 3–4): after each diffusion step, K Adagrad steps on x_{t−1}
  maximise λ log p(x_{t−1} | x_t) + log p(c | x_{t−1}); the first term (fluency, a Gaussian around the step's
  mean) keeps the latent plausible, the second is a classifier on noised latents (``LatentClassifier``).
- **Infilling, length** (§7.2, §7.1): fixed positions are imputed — the denoiser's x0 prediction is replaced
  by the known word embeddings there — so the model fills only the free positions. Length n pins ``END`` at
  position n+1 and ``PAD`` after it.
- **Syntax spans** (§7.1): log σ(s(i+1, j+1)) from the span head — words i..j form a constituent, defined as a
  spaCy dependency subtree span (see ``spans.py`` for the approximation).
- **Composition**: objectives add (log-probabilities of independent constraints), templates combine.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from lmcontrol import LMControlError
from lmcontrol.diffusion_lm.classifiers import LatentClassifier
from lmcontrol.diffusion_lm.model import DiffusionLM
from lmcontrol.diffusion_lm.sampling import Denoiser, get_sampler
from lmcontrol.diffusion_lm.schedule import spaced
from lmcontrol.diffusion_lm.spans import check_span
from lmcontrol.diffusion_lm.vocab import Vocab

Objective = Callable[
    [torch.Tensor, torch.Tensor], torch.Tensor
]  # (x_t (B, L, d), t (B,)) -> log p(c | x_t) (B,)


# --- guidance and imputation (wrappers; the samplers stay generic) --------------------------------------------
class ClassifierGuidance:
    """K gradient steps on x_{t−1} per diffusion step (Li et al. 2022 §5.2, Eq. 3 ff.; K = 3, λ = 0.01).

    Each step descends −log p(c | x_{t−1}) + λ ||x_{t−1} − μ||² / σ (μ, σ: the step's mean and std; σ = 0, as
    in DDIM or the last step, counts as 1) with one Adagrad step from a fresh state, i.e. a signed-gradient step
    of size ``step_size`` per coordinate, as in the official code. No guidance at model times below
    ``skip_below`` (the last few steps only polish the words). Positions in ``frozen`` (B, L) never move.
    """

    def __init__(
        self,
        objective: Objective,
        *,
        steps: int = 3,
        step_size: float = 0.1,
        fluency: float = 0.01,
        frozen: torch.Tensor | None = None,
        skip_below: int = 100,
    ) -> None:
        if steps < 0:
            raise LMControlError(f"guidance steps must be >= 0, got {steps}")
        self.objective, self.steps, self.step_size = objective, steps, step_size
        self.fluency, self.frozen, self.skip_below = fluency, frozen, skip_below

    def __call__(
        self, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        if int(t.max()) < self.skip_below:
            return x
        sigma = float(std) if float(std) > 0 else 1.0
        mean = mean.detach()
        x = x.detach()
        for _ in range(self.steps):
            with torch.enable_grad():
                p = x.clone().requires_grad_(True)
                log_p_c = self.objective(p, t)  # (B,)
                fluency = ((p - mean) ** 2).sum(
                    dim=(1, 2)
                ) / sigma  # (B,) −log p(x_{t−1} | x_t) up to constants
                (-log_p_c + self.fluency * fluency).sum().backward()
            grad = p.grad
            if self.frozen is not None:
                grad = grad.masked_fill(self.frozen[..., None], 0.0)
            x = x - self.step_size * grad / (grad.abs() + 1e-10)  # fresh Adagrad step = signed step
        return x


class Imputed:
    """The model as a denoiser whose x0 prediction is replaced by known embeddings where ``mask`` (B, L) is set.

    Free positions must hold real words (the template fixes where the sentence ends), so clamping there skips
    the special tokens.
    """

    def __init__(self, model: DiffusionLM, known_x0: torch.Tensor, mask: torch.Tensor) -> None:
        self.model, self.known_x0, self.mask = model, known_x0, mask

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask[..., None], self.known_x0, self.model(x_t, t))  # (B, L, d)

    def clamp(self, x0: torch.Tensor) -> torch.Tensor:
        return self.model.clamp(x0, words_only=~self.mask)


def attribute_objective(clf: LatentClassifier, field: str, value: str) -> Objective:
    """log p(field = value | x_t) from the attribute head."""
    f, v = clf.field_index(field, value)

    def objective(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(clf(x, t)[0][f], dim=-1)[:, v]

    return objective


def pos_objective(clf: LatentClassifier, tags: Sequence[str], seq_len: int) -> Objective:
    """Σ_i log p(tag_i | x_t) over all positions of ``START tags… END PAD…``."""
    from lmcontrol.diffusion_lm.classifiers import pos_sequence

    target = torch.tensor(clf.tag_ids(pos_sequence(list(tags), seq_len)))  # (L,)

    def objective(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(clf(x, t)[1], dim=-1)  # (B, L, n_tags)
        return logp.gather(-1, target.expand(x.shape[0], -1)[..., None]).squeeze(-1).sum(-1)

    return objective


def span_objective(clf: LatentClassifier, span: tuple[int, int]) -> Objective:
    """log p(words i..j form a constituent | x_t) = log σ(s(i + 1, j + 1)) (word w sits at position w + 1)."""
    p, q = span[0] + 1, span[1] + 1

    def objective(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return nn.functional.logsigmoid(clf.span_logits(x, t)[:, p, q])  # (B,)

    return objective


def compose(*objectives: Objective) -> Objective:
    """Several constraints at once: log p(c_1, c_2 | x) = Σ log p(c_i | x) (independence)."""
    return lambda x, t: sum(o(x, t) for o in objectives)


# --- what the caller asks for ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ControlTarget:
    """A control request; any combination of fields composes (infilling excludes length/POS).

    Args:
        attribute: (field, value) from an E2E MR, e.g. ("food", "Italian").
        pos: UPOS tags of the words, e.g. ("PROPN", "AUX", "DET", "NOUN", "PUNCT"); also fixes the length.
        length: number of words.
        span: syntax span (i, j), 0-based inclusive word indices that must form a constituent.
        left: infilling: words before the gap (tokenized like E2E, e.g. "The Vaults is").
        right: infilling: words after the gap.
        middle: infilling: number of words to generate in the gap.
    """

    attribute: tuple[str, str] | None = None
    pos: tuple[str, ...] | None = None
    length: int | None = None
    span: tuple[int, int] | None = None
    left: str | None = None
    right: str | None = None
    middle: int = 6

    @property
    def infilling(self) -> bool:
        return self.left is not None or self.right is not None


def template(target: ControlTarget, vocab: Vocab, seq_len: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Fixed ids (L,) and their mask (L,) for length/POS/infilling targets, or None if nothing is fixed."""
    n_words = len(target.pos) if target.pos is not None else target.length
    if target.pos is not None and target.length is not None and target.length != len(target.pos):
        raise LMControlError(f"length {target.length} disagrees with the {len(target.pos)} POS tags")
    if target.infilling:
        if n_words is not None:
            raise LMControlError("infilling cannot be combined with a length or POS target")
        if target.middle < 1:
            raise LMControlError(f"infilling middle must be >= 1 word, got {target.middle}")
        left, right = (target.left or "").split(), (target.right or "").split()
        unknown = [w for w in left + right if w not in vocab]
        if unknown:
            raise LMControlError(
                f"infilling context has words not in the vocabulary: {' '.join(unknown[:5])}"
            )
        total = len(left) + target.middle + len(right) + 2
        if total > seq_len:
            raise LMControlError(f"infilling template needs {total} positions but the model has {seq_len}")
        ids = [
            vocab.start_id,
            *vocab.ids(left),
            *[vocab.pad_id] * target.middle,
            *vocab.ids(right),
            vocab.end_id,
        ]
        mask = [True] * (len(left) + 1) + [False] * target.middle + [True] * (len(right) + 1)
    elif n_words is not None:
        if not 1 <= n_words <= seq_len - 2:
            raise LMControlError(f"length must be in 1..{seq_len - 2} words, got {n_words}")
        ids = [vocab.start_id, *[vocab.pad_id] * n_words, vocab.end_id]
        mask = [True] + [False] * n_words + [True]
    else:
        return None
    pad = seq_len - len(ids)
    return torch.tensor(ids + [vocab.pad_id] * pad), torch.tensor(mask + [True] * pad)


# --- the pipeline: only composes ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SampleSettings:
    """Sampler and guidance settings.

    Args:
        steps: diffusion steps to visit (respaced from T; paper: 200 of 2000).
        sampler: "ancestral" or "ddim".
        clamp: use the clamping trick at every step.
        guidance_steps: K gradient steps per diffusion step (paper: 3).
        step_size: Adagrad learning rate of those steps.
        fluency: λ, the weight of the fluency term.
    """

    steps: int = 200
    sampler: str = "ancestral"
    clamp: bool = True
    guidance_steps: int = 3
    step_size: float = 0.1
    fluency: float = 0.01

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise LMControlError(f"steps must be >= 1, got {self.steps}")
        get_sampler(self.sampler)


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
        self, target: ControlTarget, n: int
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
        denoiser: Denoiser = self.model
        frozen = None
        if fixed is not None:
            ids, mask = fixed[0].expand(n, L), fixed[1].expand(n, L)  # (n, L)
            denoiser, frozen = Imputed(self.model, self.model.embed(ids), mask), mask
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
        """``n`` sentences (E2E tokenization) sampled under ``target``."""
        if n < 1:
            raise LMControlError(f"n must be >= 1, got {n}")
        denoiser, objective, frozen = self.prepare(target or ControlTarget(), n)
        guidance = None
        if objective is not None and settings.guidance_steps > 0:
            guidance = ClassifierGuidance(
                objective,
                steps=settings.guidance_steps,
                step_size=settings.step_size,
                fluency=settings.fluency,
                frozen=frozen,
            )
        cfg = self.model.config
        g = torch.Generator().manual_seed(seed)
        x_T = torch.randn((n, cfg.seq_len, cfg.embed_dim), generator=g)
        timesteps = spaced(self.model.alphas_cumprod.double(), settings.steps)
        x0 = get_sampler(settings.sampler)(
            denoiser, x_T, timesteps, clamp=settings.clamp, guidance=guidance, generator=g
        )
        words_only = ~denoiser.mask if isinstance(denoiser, Imputed) else None
        return self.model.decode(x0, words_only)

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
