"""The Diffusion-LM denoiser: learned word embeddings + a transformer that predicts x0 from (x_t, t).

Li et al. 2022 §4.1–4.2: words are embedded (EMB(w) ∈ R^d), a forward process noises the embeddings, and a
network f_θ(x_t, t) predicts x0 directly ("x0-parametrization", §4.2). The rounding distribution
p_θ(w | x0) = Π_i softmax(x0_i · Eᵀ) uses the transposed embedding matrix (tied weights, as in the paper's
code).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from lmcontrol.artifacts import PretrainedMixin
from lmcontrol.diffusion.samplers import Denoiser
from lmcontrol.diffusion.schedule import Prediction, Schedule, Timesteps, respace
from lmcontrol.diffusion_lm.config import DiffusionLMConfig
from lmcontrol.diffusion_lm.vocab import SPECIALS, Vocab

ARTIFACT_KIND = "diffusion_lm.model"
VOCAB_FILE = "vocab.json"  # the word list, beside the weights


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of integer (or real) timesteps: (B,) → (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))


class DiffusionLM(PretrainedMixin, nn.Module):
    """Diffusion-LM for one word vocabulary: embeddings E (V, d) and the x0-predicting denoiser f_θ."""

    artifact_kind: ClassVar[str] = ARTIFACT_KIND
    config_class: ClassVar[type] = DiffusionLMConfig

    def __init__(self, config: DiffusionLMConfig) -> None:
        super().__init__()
        self.config = config
        W, d = config.width, config.embed_dim
        self.word_embedding = nn.Embedding(config.vocab_size, d)  # N(0, 1) init, as in the official code
        self.time_mlp = nn.Sequential(nn.Linear(W, 4 * W), nn.SiLU(), nn.Linear(4 * W, W))
        d_in = 2 * d if config.self_condition else d  # [x_t, x̂0 of the previous step] with self-conditioning
        self.in_proj = nn.Sequential(nn.Linear(d_in, W), nn.Tanh(), nn.Linear(W, W))  # up-projection
        self.pos_embedding = nn.Parameter(torch.randn(1, config.seq_len, W) * 0.02)
        self.in_norm = nn.LayerNorm(W)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            W, config.heads, 4 * W, config.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(W)
        self.out_proj = nn.Sequential(nn.Linear(W, W), nn.Tanh(), nn.Linear(W, d))  # down-projection
        self.register_buffer("alphas_cumprod", self.schedule.alphas_cumprod().float(), persistent=False)
        self.vocab: Vocab | None = None

    # --- the denoiser -------------------------------------------------------------------------------
    @property
    def schedule(self) -> Schedule:
        """The discrete schedule of ``config.schedule`` with T = ``diffusion_steps`` and x0-prediction."""
        c = self.config
        return Schedule(kind=c.schedule, prediction_type="x0", steps=c.diffusion_steps, s=c.schedule_s)

    def timesteps(self, n: int) -> Timesteps:
        """``n`` respaced steps of the table the model was trained with (the float32 buffer)."""
        return respace(self.alphas_cumprod.double(), n)

    def denoiser(
        self, *, clamp: bool, known_x0: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> Denoiser:
        """The sampler's denoiser: x̂0 = f_θ(x_t, t), replaced by ``known_x0`` (B, L, d) where ``mask`` (B, L) is
        set (imputation, §7.2), then snapped to the nearest word embedding if ``clamp`` (the clamping trick,
        §4.2; free positions of a template skip the specials); ε̂ follows from the final x̂0.

        With ``config.self_condition`` each call feeds back the x̂0 (after imputation, before clamping) of the
        previous call of the same sampling run; a call at a time t not below the previous one starts a new run."""
        previous: dict[str, torch.Tensor] = {}  # "t", "x0" of the last call (self-conditioning)

        def denoise(x_t: torch.Tensor, t: torch.Tensor, alpha_bar: torch.Tensor) -> Prediction:
            x0_prev = None
            if previous and previous["x0"].shape == x_t.shape and bool((t < previous["t"]).all()):
                x0_prev = previous["x0"]
            x0 = self(x_t, t, x0_prev)  # (B, L, d)
            if mask is not None:
                x0 = torch.where(mask[..., None], known_x0, x0)
            if self.config.self_condition:
                previous.update(t=t.detach().clone(), x0=x0.detach())
            if clamp:
                x0 = self.clamp(x0, words_only=None if mask is None else ~mask)
            return self.schedule.prediction(x_t, x0, alpha_bar)

        return denoise

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, x0_prev: torch.Tensor | None = None) -> torch.Tensor:
        """x0_hat = f_θ(x_t, t [, x̂0_prev]): (B, L, d), (B,) → (B, L, d). ``x0_prev`` (self-conditioning only)
        defaults to zeros, the "no previous estimate" input of Chen et al. 2022 §3.3."""
        B, L, _ = x_t.shape
        if self.config.self_condition:
            x_t = torch.cat([x_t, torch.zeros_like(x_t) if x0_prev is None else x0_prev], dim=-1)  # (B, L, 2d)
        h = self.in_proj(x_t) + self.pos_embedding[:, :L]  # (B, L, W)
        h = h + self.time_mlp(timestep_embedding(t, self.config.width))[:, None, :]  # (B, 1, W) broadcast
        h = self.encoder(self.dropout(self.in_norm(h)))  # (B, L, W)
        return self.out_proj(self.out_norm(h))  # (B, L, d)

    # --- embeddings, rounding, clamping -------------------------------------------------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """EMB(w): (B, L) → (B, L, d)."""
        return self.word_embedding(ids)

    def logits(self, x0: torch.Tensor) -> torch.Tensor:
        """Rounding logits x0 · Eᵀ of p_θ(w | x0): (B, L, d) → (B, L, V)."""
        return x0 @ self.word_embedding.weight.t()

    def nearest(self, x: torch.Tensor, words_only: torch.Tensor | None = None) -> torch.Tensor:
        """Ids of the nearest embedding rows (L2; used by clamping and rounding): (B, L, d) → (B, L).

        Where ``words_only`` (B, L) is set, the four specials (START, END, UNK, PAD) are excluded.
        """
        E = self.word_embedding.weight  # (V, d)
        dist = (x * x).sum(-1, keepdim=True) - 2 * x @ E.t() + (E * E).sum(-1)  # (B, L, V)
        if words_only is not None:
            special = torch.zeros(E.shape[0], dtype=torch.bool, device=x.device)
            special[: len(SPECIALS)] = True
            dist = dist.masked_fill(words_only[..., None] & special, float("inf"))
        return dist.argmin(-1)

    def clamp(self, x0: torch.Tensor, words_only: torch.Tensor | None = None) -> torch.Tensor:
        """The clamping trick (Li et al. 2022 §4.2): snap each vector to its nearest word embedding."""
        return self.word_embedding(self.nearest(x0, words_only))

    def decode(self, x0: torch.Tensor, words_only: torch.Tensor | None = None) -> list[str]:
        """Round final latents to words: (B, L, d) → B strings (needs ``self.vocab``)."""
        if self.vocab is None:
            raise RuntimeError("this DiffusionLM has no vocabulary attached")
        return [self.vocab.decode(row.tolist()) for row in self.nearest(x0, words_only)]

    # --- artifacts ----------------------------------------------------------------------------------
    def save_with_vocab(self, path: str | Path, **kwargs: Any) -> Path:
        """``save_pretrained`` with the vocabulary as ``vocab.json`` (a JSON list of words) beside the weights."""
        import json

        if self.vocab is None:
            raise RuntimeError("attach a vocabulary before saving")
        files = {**kwargs.pop("files", {}), VOCAB_FILE: json.dumps(self.vocab.words, ensure_ascii=False)}
        return self.save_pretrained(
            path, base_model=None, hidden_size=self.config.embed_dim, files=files, **kwargs
        )

    @classmethod
    def load(cls, path: str | Path) -> DiffusionLM:
        """Load an artifact written by ``save_with_vocab`` (model in eval mode, vocabulary attached); artifacts
        from before ``vocab.json`` keep the vocabulary in ``extra["vocab"]``."""
        import json

        from lmcontrol.artifacts import ArtifactError, read_artifact_file

        model = cls.from_pretrained(path)
        text = read_artifact_file(path, VOCAB_FILE, model.meta)
        try:
            words = json.loads(text) if text is not None else (model.meta.extra if model.meta else {}).get("vocab")
        except ValueError:
            words = None
        if not isinstance(words, list) or len(words) != model.config.vocab_size or not all(
            isinstance(w, str) for w in words
        ):
            raise ArtifactError(f"artifact {path} is corrupt: its vocabulary is missing or of the wrong size")
        model.vocab = Vocab(words)
        return model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
