"""Frozen configs of DGLM's two trained networks (saved with their artifacts) and the torch-free run settings of
their trainers (the command-line options are generated from them).

DGLM (Lovelace et al. 2024, "Diffusion Guided Language Modeling") has three parts: a semantic encoder
(frozen, any sentence-transformers model), a ``SemanticDiffusion`` that proposes the continuation's embedding
given the prefix's, and a ``PromptGenerator`` that turns a (noised) proposal into a soft prompt for the frozen
autoregressive decoder.
"""

from __future__ import annotations

import dataclasses

from lmcontrol import LMControlError

SOURCES = ("c4", "wikitext")  # text sources of the (prefix, continuation) pairs (dglm.pairs)
TARGETS = ("human", "decoder")  # whose continuations the prompt generator learns to produce (PrompterRun)


def _check(name: str, checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise LMControlError(f"{name}: {message}")


@dataclasses.dataclass(frozen=True)
class SemanticDiffusionConfig:
    """The denoiser over continuation embeddings (paper §3.2: a transformer over k "feature tokens").

    Attributes:
        embed_dim: the sentence encoder's width (MiniLM: 384).
        encoder: the encoder's id; a pipeline refuses a prompt generator trained on another encoder.
        feature_tokens: k — the embedding is projected and split into k tokens for the transformer.
        width, layers, heads: the transformer.
        dropout: dropout in the transformer.
        cond_dropout: probability of replacing the prefix embedding by a learned null embedding in training
            (paper: 0.1), which makes classifier-free guidance possible.
        schedule_scale: log-SNR shift of the cosine schedule used for training and sampling (1 = plain cosine).
    """

    embed_dim: int = 384
    encoder: str = "all-MiniLM-L6-v2"
    feature_tokens: int = 8
    width: int = 256
    layers: int = 4
    heads: int = 4
    dropout: float = 0.0
    cond_dropout: float = 0.1
    schedule_scale: float = 1.0

    def __post_init__(self) -> None:
        _check(
            "SemanticDiffusionConfig",
            [
                (self.embed_dim >= 1, f"embed_dim must be >= 1, got {self.embed_dim}"),
                (self.feature_tokens >= 1, f"feature_tokens must be >= 1, got {self.feature_tokens}"),
                (self.width % self.heads == 0, f"width {self.width} is not divisible by heads {self.heads}"),
                (self.layers >= 1, f"layers must be >= 1, got {self.layers}"),
                (0.0 <= self.cond_dropout < 1.0, f"cond_dropout must be in [0, 1), got {self.cond_dropout}"),
                (self.schedule_scale > 0, f"schedule_scale must be > 0, got {self.schedule_scale}"),
            ],
        )


@dataclasses.dataclass(frozen=True)
class PromptGeneratorConfig:
    """The map from a noised proposal to per-layer key/value prefixes of the decoder (prefix-tuning style).

    The issue's measurement (and ours) says an input-embedding soft prompt barely moves a frozen decoder; per-layer
    key/value prefixes do, so the generator emits ``length`` virtual tokens in every layer's KV cache.

    Attributes:
        embed_dim, encoder: the semantic space it reads (must match the diffusion model's).
        length: m, virtual tokens per layer.
        kind: ``"mlp"`` (default) — [proposal | noise-level features] -> tanh(Linear(hidden)) -> one output map
            straight to all m tokens' keys/values of every layer (the issue's design); ``"transformer"`` — the
            proposal split into m tokens, a small transformer over them, a shared per-token output map. Measured
            on held-out pairs at σ² = 0.05 after 100 steps: proposal gap 0.094 nats (mlp) vs 0.015 (transformer)
            — the direct map lets every virtual token of every layer read the whole proposal.
        hidden: the MLP's hidden width (kind="mlp").
        rank: the MLP output map factorised through ``rank`` dims (0 = full). Full is hidden × m·kv_width
            (47 M parameters for the embedded decoder, 94 MB fp16); rank 128 keeps the artifact under 25 MiB.
        width, layers, heads: the transformer (kind="transformer"; paper: 6 layers of 768).
        num_layers, num_kv_heads, head_dim: the decoder's attention geometry (the output shape).
        augment_scale: log-SNR shift of the cosine schedule that draws the training noise (paper: 2).
        init_scale: multiplies the output map's initial weights. For kind="transformer" 0 worked best (start at
            the base prefix); for kind="mlp" the default init (1) learns the proposal fastest.
        prefix_input: kind="mlp" also reads the standardised encoder embedding of the prefix the decoder continues
            (the issue's "condition it on the prefix as well as the proposal"): the generator can then emit what
            the proposal adds to what the prefix already implies, instead of restating the proposal blindly.
    """

    embed_dim: int = 384
    encoder: str = "all-MiniLM-L6-v2"
    length: int = 8
    kind: str = "mlp"
    hidden: int = 512
    rank: int = 128
    width: int = 256
    layers: int = 2
    heads: int = 4
    num_layers: int = 30
    num_kv_heads: int = 3
    head_dim: int = 64
    augment_scale: float = 2.0
    init_scale: float = 1.0
    init_text: str = "The following text continues the passage:"
    prefix_input: bool = False

    def __post_init__(self) -> None:
        _check(
            "PromptGeneratorConfig",
            [
                (self.length >= 1, f"length must be >= 1, got {self.length}"),
                (self.kind in ("mlp", "transformer"), f"kind must be 'mlp' or 'transformer', got {self.kind!r}"),
                (self.hidden >= 1, f"hidden must be >= 1, got {self.hidden}"),
                (self.rank >= 0, f"rank must be >= 0, got {self.rank}"),
                (self.width % self.heads == 0, f"width {self.width} is not divisible by heads {self.heads}"),
                (self.layers >= 0, f"layers must be >= 0, got {self.layers}"),
                (self.augment_scale > 0, f"augment_scale must be > 0, got {self.augment_scale}"),
                (not self.prefix_input or self.kind == "mlp", "prefix_input needs kind='mlp'"),
            ],
        )

    @property
    def kv_width(self) -> int:
        """Values per virtual token: every layer's key and value."""
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim


@dataclasses.dataclass(frozen=True)
class PrompterRun:
    """How the prompt generator is trained beyond its config (``train_prompter``)."""

    batch_size: int = 8  # pairs per step
    examples: int | None = None  # training pairs to use (None = all)
    eval_pairs: int = 48  # held-out pairs for the proposal gap at each checkpoint
    sources: tuple[str, ...] = SOURCES
    # Prefixes are cut to a random last-k tokens, k ~ U[min_prefix, 32], per batch: users prompt with a few
    # words, not 32 tokens, and with less context the decoder has more reason to read the proposal.
    min_prefix: int = 4  # shortest prefix (tokens) prefixes are randomly cut to
    short_prefix: int = 8  # the second proposal gap reported at checkpoints uses this many prefix tokens
    # Share of rows noised to exactly the inference σ² (0.05); the rest draw α² from the shifted cosine schedule.
    # With the schedule alone (share 0) the gap grew 2x slower in our runs: half the rows sit at σ² > 0.2, where
    # the generator must learn to ignore the proposal, and few rows teach it what to do at the σ² used at
    # inference. The schedule half keeps the fall-back to plain continuation at high noise.
    inference_share: float = 0.5  # share of rows noised to the inference σ² (rest: the shifted cosine schedule)
    # "human": the text's own continuations; "decoder": the frozen decoder's own samples of each prefix
    # (T = 1, p = 0.95; generated once and cached), so that the generator learns to pick, among the decoder's own
    # continuations, the one the proposal describes, instead of pulling the decoder toward human text (whose
    # perplexity under the decoder is about twice that of its own samples).
    targets: str = "human"  # whose continuations to learn: "human" (the text's) or "decoder" (its own samples)
    init: str | None = None  # a saved prompt generator to start from (warm start; its config is kept)

    def __post_init__(self) -> None:
        if min(self.batch_size, self.eval_pairs, self.min_prefix, self.short_prefix) < 1:
            raise LMControlError("batch size, eval pairs, min prefix and short prefix must be >= 1")
        if not 0.0 <= self.inference_share <= 1.0:
            raise LMControlError(f"inference share must be in [0, 1], got {self.inference_share}")
        if self.targets not in TARGETS:
            raise LMControlError(f"unknown targets '{self.targets}' (known: {', '.join(TARGETS)})")


@dataclasses.dataclass(frozen=True)
class DiffusionRun:
    """How the semantic diffusion model is trained beyond its config (``train_diffusion``)."""

    batch_size: int = 256  # pairs per step
    sources: tuple[str, ...] = SOURCES
