"""DGLM's trained networks: ``SemanticDiffusion`` (proposes a continuation embedding) and ``PromptGenerator``
(turns a noised proposal into per-layer key/value prefixes for the frozen decoder).

Both work in a *standardised* semantic space: a unit-norm encoder embedding e is mapped to
x = (e − μ) / s with per-dimension mean μ and std s of the training continuations (the paper's
``scale_by_std``), so every coordinate has unit variance as the diffusion assumes. ``to_unit`` maps back
(un-standardise, then L2-normalise) — what probes read.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from lmcontrol import LMControlError
from lmcontrol.artifacts import PretrainedMixin
from lmcontrol.dglm.config import PromptGeneratorConfig, SemanticDiffusionConfig
from lmcontrol.diffusion.guidance import classifier_free
from lmcontrol.diffusion.samplers import Denoiser
from lmcontrol.diffusion.schedule import Schedule, log_snr

if TYPE_CHECKING:
    from lmcontrol.models import LanguageModel

KV = tuple[torch.Tensor, torch.Tensor]


def time_embedding(a2: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features (B, dim) of the log-SNR, the noise level both networks are conditioned on."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32, device=a2.device) / max(half - 1, 1))
    angles = log_snr(a2).reshape(-1, 1) * 50.0 * freqs  # log-SNR spans ~[-20, 20]; x50 spreads it like steps
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class _Standardiser(nn.Module):
    """μ and s of the semantic space, stored with each artifact (both artifacts must agree)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        with torch.no_grad():
            self.mean.copy_(mean)
            self.std.copy_(std.clamp(min=1e-4))

    def standardise(self, unit: torch.Tensor) -> torch.Tensor:
        return (unit - self.mean) / self.std

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x * self.std + self.mean, dim=-1)


def _encoder(width: int, layers: int, heads: int, dropout: float) -> nn.Module:
    layer = nn.TransformerEncoderLayer(
        width, heads, dim_feedforward=2 * width, dropout=dropout, batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class SemanticDiffusion(PretrainedMixin, nn.Module):
    """v-prediction denoiser over continuation embeddings, conditioned on the prefix embedding and noise level.

    Paper §3.2: the noisy embedding z_t is projected and split into k feature tokens, the prefix embedding
    likewise; a transformer reads [time token | k noisy tokens | k prefix tokens] and the k noisy-token outputs
    are merged back into v̂ (R^d). Training minimises ‖v̂ − v‖² with v = α ε − σ x (Salimans & Ho 2022, eq. 9),
    t ~ U[0, 1] on the (shifted) cosine schedule; the prefix is replaced by a learned null vector with
    probability ``cond_dropout`` so that classifier-free guidance (Ho & Salimans 2022) can extrapolate:
    v = v_uncond + w (v_cond − v_uncond).
    """

    artifact_kind = "dglm.diffusion"
    config_class = SemanticDiffusionConfig

    def __init__(self, config: SemanticDiffusionConfig) -> None:
        super().__init__()
        self.config = c = config
        self.space = _Standardiser(c.embed_dim)
        self.split_x = nn.Linear(c.embed_dim, c.feature_tokens * c.width)
        self.split_c = nn.Linear(c.embed_dim, c.feature_tokens * c.width)
        self.null_context = nn.Parameter(torch.randn(c.embed_dim) * 0.1)
        self.time_mlp = nn.Sequential(nn.Linear(c.width, c.width), nn.SiLU(), nn.Linear(c.width, c.width))
        self.pos = nn.Parameter(torch.randn(1 + 2 * c.feature_tokens, c.width) * 0.02)
        self.transformer = _encoder(c.width, c.layers, c.heads, c.dropout)
        self.norm = nn.LayerNorm(c.width)
        self.merge = nn.Linear(c.feature_tokens * c.width, c.embed_dim)
        nn.init.zeros_(self.merge.weight)  # start by predicting v = 0
        nn.init.zeros_(self.merge.bias)

    def forward(self, z: torch.Tensor, a2: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """v̂ (B, d) for noisy z (B, d) at α² (B, 1); ``context`` = standardised prefix embeddings (B, d) or
        None for the unconditional model."""
        c, b = self.config, z.shape[0]
        if context is None:
            context = self.null_context.expand(b, -1)
        t = self.time_mlp(time_embedding(a2, c.width)).unsqueeze(1)  # (B, 1, w)
        x = self.split_x(z).view(b, c.feature_tokens, c.width)
        ctx = self.split_c(context).view(b, c.feature_tokens, c.width)
        h = self.transformer(torch.cat([t, x, ctx], dim=1) + self.pos)
        h = self.norm(h[:, 1 : 1 + c.feature_tokens]).reshape(b, -1)
        return self.merge(h)

    def drop_context(self, context: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Replace rows of ``context`` by the null embedding with probability ``cond_dropout`` (training)."""
        keep = torch.rand(context.shape[0], 1, generator=generator) >= self.config.cond_dropout
        return torch.where(keep, context, self.null_context.expand_as(context))

    @property
    def schedule(self) -> Schedule:
        """The continuous cosine schedule (log-SNR shifted by ``schedule_scale``) with v-prediction."""
        return Schedule(kind="cosine", prediction_type="v", shift=self.config.schedule_scale)

    def denoiser(self, context: torch.Tensor, cfg_scale: float = 1.0) -> Denoiser:
        """The sampler's ``denoiser(z, t, ᾱ) -> (x̂0, ε̂)`` for prefix embeddings ``context`` (B, d), with
        classifier-free guidance of weight ``cfg_scale`` (1 = conditional model, 0 = unconditional)."""

        def v(z: torch.Tensor, t: torch.Tensor, a2: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
            return self(z, a2[:, None], ctx)  # conditioned on α² (B, 1), not on t

        return self.schedule.denoiser(classifier_free(v, context, self.null_context, cfg_scale))


class PromptGenerator(PretrainedMixin, nn.Module):
    """Noised proposal (standardised embedding + α²) -> m virtual tokens in every decoder layer's KV cache.

    DGLM's prompt generator (paper §3.1) emits input-embedding soft prompts for a fine-tuned decoder; our decoder
    stays frozen, so we emit prefix-tuning style key/value prefixes instead (Li & Liang 2021), which a frozen model
    follows far more readily. Default layout (``kind="mlp"``): [z | sinusoidal features of log-SNR] →
    tanh(Linear(→ hidden)) → a rank-r Linear to all m tokens × layers × (K, V), added to a learned base prefix
    initialised from the decoder's own keys/values of ``init_text``. ``kind="transformer"`` splits z into m
    tokens and runs a small transformer over them first (slower to learn the proposal; see the config).

    Training (``dglm.train``) uses Gaussian-noise augmentation from the forward process: the proposal is noised
    to a random α² (cosine schedule shifted by ``augment_scale``; half of the rows at the inference σ² instead),
    so at high noise the generator learns to fall back on plain AR continuation and at low noise to follow the
    proposal (paper §3.1, "noise augmentation").

    With ``prefix_input`` the MLP reads [z | log-SNR features | standardised prefix embedding]: the KV prefix is a
    function of what the decoder is asked to continue as well as of the proposal.
    """

    artifact_kind = "dglm.prompter"
    config_class = PromptGeneratorConfig

    def __init__(self, config: PromptGeneratorConfig) -> None:
        super().__init__()
        self.config = c = config
        self.space = _Standardiser(c.embed_dim)
        total = c.length * c.kv_width
        if c.kind == "mlp":
            # Paper-style direct map: every virtual token of every layer reads the whole proposal.
            inputs = c.embed_dim * (2 if c.prefix_input else 1) + c.width
            self.body = nn.Sequential(nn.Linear(inputs, c.hidden), nn.Tanh())
            self.out = (
                nn.Sequential(nn.Linear(c.hidden, c.rank, bias=False), nn.Linear(c.rank, total))
                if c.rank
                else nn.Linear(c.hidden, total)
            )
        else:
            self.split = nn.Linear(c.embed_dim, c.length * c.width)
            self.time_mlp = nn.Sequential(nn.Linear(c.width, c.width), nn.SiLU(), nn.Linear(c.width, c.width))
            self.pos = nn.Parameter(torch.randn(c.length, c.width) * 0.02)
            self.transformer = _encoder(c.width, c.layers, c.heads, 0.0) if c.layers else nn.Identity()
            self.norm = nn.LayerNorm(c.width)
            self.out = nn.Linear(c.width, c.kv_width)
        last = self.out[-1] if isinstance(self.out, nn.Sequential) else self.out
        with torch.no_grad():
            last.weight.mul_(c.init_scale)
            last.bias.zero_()
        self.base = nn.Parameter(torch.zeros(c.num_layers, 2, c.num_kv_heads, c.length, c.head_dim))

    def forward(self, z: torch.Tensor, a2: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """KV prefixes (L, 2, B, H_kv, m, hd) for noised proposals z (B, d) at α² (B, 1); ``prefix`` = the
        standardised prefix embeddings (B, d), read only (and then required) with ``prefix_input``."""
        c, b = self.config, z.shape[0]
        t = time_embedding(a2, c.width)
        if c.kind == "mlp":
            parts = [z, t]
            if c.prefix_input:
                if prefix is None:
                    raise LMControlError("this prompt generator reads the prefix embedding: pass prefix=")
                parts.append(prefix.to(z))
            out = self.out(self.body(torch.cat(parts, dim=-1)))
        else:
            h = self.split(z).view(b, c.length, c.width) + self.pos + self.time_mlp(t).unsqueeze(1)
            out = self.out(self.norm(self.transformer(h)))
        out = out.view(b, c.length, c.num_layers, 2, c.num_kv_heads, c.head_dim)
        return self.base.unsqueeze(2) + out.permute(2, 3, 0, 4, 1, 5)  # (L, 2, B, H_kv, m, hd)

    def past_key_values(
        self, z: torch.Tensor, a2: torch.Tensor, dtype: torch.dtype | None = None, prefix: torch.Tensor | None = None
    ) -> list[KV]:
        kv = self(z, a2, prefix)
        if dtype is not None:
            kv = kv.to(dtype)
        return [(kv[i, 0], kv[i, 1]) for i in range(kv.shape[0])]

    @torch.no_grad()
    def with_prefix_input(self) -> PromptGenerator:
        """A copy that also reads the prefix embedding and, until trained, computes exactly what this one does
        (the new input columns start at zero): the warm start of ``--prefix-input``."""
        if self.config.kind != "mlp" or self.config.prefix_input:
            raise LMControlError("with_prefix_input needs an MLP prompt generator that does not read the prefix yet")
        wide = PromptGenerator(dataclasses.replace(self.config, prefix_input=True))
        state = dict(self.state_dict())
        w = state["body.0.weight"]
        state["body.0.weight"] = torch.cat([w, w.new_zeros(w.shape[0], self.config.embed_dim)], dim=1)
        wide.load_state_dict(state)
        wide.base_model, wide.base_hidden_size = self.base_model, self.base_hidden_size
        return wide.to(w.device)

    @torch.no_grad()
    def init_base(self, lm: LanguageModel) -> None:
        """Set the base prefix to the decoder's keys/values of ``init_text`` (prefix-tuning §7.2 init)."""
        from lmcontrol import hf_adapter as hf

        ids = lm.tokenizer(self.config.init_text, add_special_tokens=False)["input_ids"]
        ids = (ids * (self.config.length // max(len(ids), 1) + 1))[: self.config.length]
        cache = hf.make_cache(lm.model)
        hf.decoder(lm.model)(input_ids=torch.tensor([ids]), cache=cache, use_cache=True)
        kv = torch.stack([torch.stack([k[0], v[0]]) for k, v in hf.cache_kv(cache)])  # (L, 2, H_kv, m, hd)
        self.base.copy_(kv.float())

    def check_model(self, lm: LanguageModel) -> None:
        c, info = self.config, lm.info
        have, want = (c.num_layers, c.num_kv_heads, c.head_dim), (info.num_layers, info.num_kv_heads, info.head_dim)
        if have != want:
            raise LMControlError(
                f"prompt generator for '{self.base_model}' has (layers, kv heads, head dim) {have}, "
                f"but '{info.name}' has {want}"
            )
