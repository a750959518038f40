"""The frozen config of a Diffusion-LM denoiser (saved with the artifact), and the torch-free settings of its
trainers and sampler (the command-line options are generated from them)."""

from __future__ import annotations

import dataclasses

from lmcontrol import LMControlError
from lmcontrol.settings import ARTIFACTS_DIR

SCHEDULES = ("sqrt", "linear")
T_SAMPLINGS = ("uniform", "linear")  # p(t) of training; "linear" = a loss weight ∝ t + 1 on the noisy steps
DEFAULT_MODEL_DIR = ARTIFACTS_DIR / "diffusion-lm-e2e"
DEFAULT_CLASSIFIER_DIR = ARTIFACTS_DIR / "diffusion-lm-e2e-classifier"
DEFAULT_SPAN_CLASSIFIER_DIR = ARTIFACTS_DIR / "diffusion-lm-e2e-span-classifier"


@dataclasses.dataclass(frozen=True)
class DiffusionLMConfig:
    """Shape of the model and of its diffusion process.

    Attributes:
        vocab_size: number of words including the four specials (START, END, UNK, PAD).
        seq_len: tokens per sequence (the paper uses 64 for E2E).
        embed_dim: word-vector size d; small is better for diffusion (Li et al. 2022 §7: d=16 for E2E).
        width: transformer hidden size.
        layers: transformer layers.
        heads: attention heads.
        dropout: dropout inside the transformer.
        diffusion_steps: T, the number of diffusion steps (paper: 2000).
        schedule: noise schedule name; "sqrt" is the paper's ᾱ_t = 1 − sqrt(t/T + s) (§4.3 / App. A).
        schedule_s: the offset s of the sqrt schedule (paper: 1e-4).
        self_condition: feed the previous step's x̂0 back as a second input (Chen et al. 2022, "Analog Bits",
            §3.3): trained with it on for half of the batches, used at every sampling step.
        format_version: bumped when the saved layout changes.
    """

    vocab_size: int = 1000
    seq_len: int = 64
    embed_dim: int = 16
    width: int = 128
    layers: int = 4
    heads: int = 4
    dropout: float = 0.1
    diffusion_steps: int = 2000
    schedule: str = "sqrt"
    schedule_s: float = 1e-4
    self_condition: bool = False
    format_version: int = 1

    def __post_init__(self) -> None:
        checks = [
            (self.vocab_size >= 5, f"vocab_size must be >= 5, got {self.vocab_size}"),
            (1 <= self.seq_len <= 4096, f"seq_len must be in 1..4096, got {self.seq_len}"),
            (1 <= self.embed_dim <= 1024, f"embed_dim must be in 1..1024, got {self.embed_dim}"),
            (self.width >= 8 and self.layers >= 1, f"width/layers too small: {self.width}/{self.layers}"),
            (self.heads >= 1 and self.width % self.heads == 0, f"width {self.width} not divisible by heads"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.diffusion_steps >= 2, f"diffusion_steps must be >= 2, got {self.diffusion_steps}"),
            (
                self.schedule in SCHEDULES,
                f"unknown schedule '{self.schedule}' (known: {', '.join(SCHEDULES)})",
            ),
            (0.0 < self.schedule_s < 1.0, f"schedule_s must be in (0, 1), got {self.schedule_s}"),
        ]
        for ok, message in checks:
            if not ok:
                raise LMControlError(f"DiffusionLMConfig: {message}")


@dataclasses.dataclass(frozen=True)
class DiffusionTrainSettings:
    """What ``lmcontrol train diffusion-lm`` needs beyond the model config."""

    steps: int = 12000  # optimizer steps
    batch_size: int = 32  # sequences per step
    lr: float = 1e-3  # peak AdamW learning rate (cosine decay)
    warmup_steps: int = 500  # linear warm-up steps
    min_count: int = 10  # vocabulary minimum word count
    seed: int = 0  # seed of the initialisation and of every batch
    checkpoint_every: int = 500  # steps between checkpoints
    log_every: int = 50  # steps between logged losses
    t_sampling: str = "uniform"  # how training draws t: "uniform" (the paper) or "linear" (p(t) ∝ t + 1)
    bf16: bool = False  # autocast the forward to bfloat16 (≈1.7× faster on a CPU with AVX512-BF16, and on GPUs)
    init_from: str = ""  # a Diffusion-LM artifact to start from (its shape and vocabulary), with a fresh schedule
    freeze_embeddings: bool = False  # keep the word embeddings fixed (latent classifiers trained on them stay valid)

    def __post_init__(self) -> None:
        if self.t_sampling not in T_SAMPLINGS:
            raise LMControlError(f"unknown t_sampling '{self.t_sampling}' (known: {', '.join(T_SAMPLINGS)})")


@dataclasses.dataclass(frozen=True)
class ClassifierTrainSettings:
    steps: int = 2000  # optimizer steps
    batch_size: int = 32  # sequences per step
    lr: float = 3e-3  # peak AdamW learning rate
    width: int = 64  # classifier transformer width
    layers: int = 2  # classifier transformer layers
    seed: int = 0  # seed of the initialisation and of every batch
    tag_limit: int = 42061  # E2E train sentences to tag / parse with spaCy (spaCy is the slow part)
    checkpoint_every: int = 500  # steps between checkpoints
    log_every: int = 50  # steps between logged losses


@dataclasses.dataclass(frozen=True)
class SampleSettings:
    """Sampler and guidance settings.

    Attributes:
        steps: diffusion steps to visit (respaced from T; paper: 200 of 2000).
        sampler: "ancestral" or "ddim".
        clamp: use the clamping trick at every step.
        guidance_steps: K gradient steps per diffusion step (paper: 3).
        step_size: Adagrad learning rate of those steps.
        fluency: λ, the weight of the fluency term.
        mbr: candidates per returned sample; > 1 returns, per group, the candidate with the lowest expected risk
            1 − BLEU against the others (Minimum Bayes Risk decoding, Kumar & Byrne 2004; Li et al. 2022 §6).
        noise_scale: scale of the ancestral step's noise, a sampling temperature in [0, 1] (1 = the exact step).
    """

    steps: int = 200
    sampler: str = "ancestral"
    clamp: bool = True
    guidance_steps: int = 3
    step_size: float = 0.2
    fluency: float = 0.01
    mbr: int = 1
    noise_scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise LMControlError(f"steps must be >= 1, got {self.steps}")
        if not isinstance(self.mbr, int) or not 1 <= self.mbr <= 64:
            raise LMControlError(f"mbr must be in 1..64 candidates, got {self.mbr}")
        if not 0.0 <= self.noise_scale <= 1.0:
            raise LMControlError(f"noise_scale must be in [0, 1], got {self.noise_scale}")
        if self.noise_scale != 1.0 and self.sampler != "ancestral":
            raise LMControlError(f"noise_scale applies to the ancestral sampler, not '{self.sampler}'")
        from lmcontrol.diffusion.samplers import get_sampler  # torch: only when a setting is built

        get_sampler(self.sampler)
