"""The key/value prefix of prefix-tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts").

Every decoder layer attends to m extra key/value pairs placed in the KV cache before the prompt. During training
the prefix is produced by the paper's reparameterisation (§4.3): a small embedding P' (m, d) passed through an
MLP, ``P = MLP(P')``, which optimises more stably than the raw tensors. We add the MLP's output to a fixed
starting point ``kv_0`` (the model's own keys/values of some real words, §7.2 "initialisation with real words",
or zeros) and zero-initialise the MLP's last layer, so training starts exactly at ``kv_0``. After training
``merge()`` evaluates the MLP once and keeps only the (layers, 2, kv heads, m, head dim) tensor; the MLP is
dropped, which is what makes a prefix small enough to store thousands per base model.

KV prefixes carry no position: the prompt's tokens count positions from 0 after them (``generation.Prefill``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import torch
from torch import nn

from lmcontrol import LMControlError
from lmcontrol import hf_adapter as hf
from lmcontrol.artifacts import PretrainedMixin
from lmcontrol.prefix.config import PrefixConfig

if TYPE_CHECKING:
    from lmcontrol.models import LanguageModel

log = logging.getLogger(__name__)


def config_for(lm: LanguageModel, **overrides: object) -> PrefixConfig:
    """A ``PrefixConfig`` with the geometry of ``lm`` (and any overrides)."""
    info = lm.info
    return PrefixConfig(
        num_layers=info.num_layers,
        num_kv_heads=info.num_kv_heads,
        head_dim=info.head_dim,
        hidden_size=info.hidden_size,
        **overrides,  # type: ignore[arg-type]
    )


def with_geometry(config: PrefixConfig, lm: LanguageModel) -> PrefixConfig:
    """``config`` with the attention geometry of ``lm`` (the CLI builds the config before loading the model)."""
    info = lm.info
    return dataclasses.replace(
        config,
        num_layers=info.num_layers,
        num_kv_heads=info.num_kv_heads,
        head_dim=info.head_dim,
        hidden_size=info.hidden_size,
    )


@torch.no_grad()
def words_kv(lm: LanguageModel, text: str, length: int) -> torch.Tensor:
    """The model's keys/values of ``text`` cut (or cycled) to ``length`` tokens: (L, 2, H_kv, m, head_dim)."""
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"] or [int(lm.tokenizer.eos_token_id)]
    ids = (ids * (length // len(ids) + 1))[:length]
    cache = hf.make_cache(lm.model)
    hf.decoder(lm.model)(input_ids=torch.tensor([ids]), cache=cache, use_cache=True)
    kv = [torch.stack([k[0], v[0]]) for k, v in hf.cache_kv(cache)]  # L x (2, H_kv, m, hd)
    return torch.stack(kv).float()  # (L, 2, H_kv, m, hd)


class Prefix(PretrainedMixin, nn.Module):
    """A prefix-tuning key/value prefix (Li & Liang 2021): m virtual tokens in every layer's KV cache."""

    artifact_kind = "prefix.kv"
    config_class = PrefixConfig

    def __init__(self, config: PrefixConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        shape = (c.num_layers, 2, c.num_kv_heads, c.length, c.head_dim)  # (L, 2, H_kv, m, hd)
        if c.merged or c.reparam_hidden == 0:
            self.kv = nn.Parameter(torch.zeros(shape))
        else:
            self.embedding = nn.Parameter(torch.randn(c.length, c.hidden_size))  # P' (m, d)
            self.mlp = nn.Sequential(
                nn.Linear(c.hidden_size, c.reparam_hidden),
                nn.Tanh(),
                nn.Linear(c.reparam_hidden, c.num_layers * 2 * c.num_kv_heads * c.head_dim),
            )
            self.register_buffer("kv_0", torch.zeros(shape))
            if c.init == "words":  # start exactly at kv_0 (filled by init_words)
                nn.init.zeros_(self.mlp[2].weight)
                nn.init.zeros_(self.mlp[2].bias)

    @property
    def reparameterised(self) -> bool:
        return hasattr(self, "mlp")

    @classmethod
    def create(cls, lm: LanguageModel, config: PrefixConfig) -> Prefix:
        """A fresh prefix for ``lm``: words-initialised from ``config.init_text``, or random."""
        prefix = cls(config)
        prefix.base_model, prefix.base_hidden_size = lm.info.name, lm.info.hidden_size
        if config.init == "words":
            start = words_kv(lm, config.init_text, config.length)
        else:
            start = torch.randn(prefix.kv_shape) * 0.1
        with torch.no_grad():
            (prefix.kv_0 if prefix.reparameterised else prefix.kv).copy_(start)
        return prefix

    @property
    def kv_shape(self) -> tuple[int, int, int, int, int]:
        c = self.config
        return (c.num_layers, 2, c.num_kv_heads, c.length, c.head_dim)

    def kv_tensor(self) -> torch.Tensor:
        """The prefix as one tensor (L, 2, H_kv, m, hd); differentiable in the trainable parameters."""
        if not self.reparameterised:
            return self.kv
        c = self.config
        out = self.mlp(self.embedding)  # (m, L * 2 * H_kv * hd)
        out = out.view(c.length, c.num_layers, 2, c.num_kv_heads, c.head_dim)  # (m, L, 2, H_kv, hd)
        return self.kv_0 + out.permute(1, 2, 3, 0, 4)  # (L, 2, H_kv, m, hd)

    @torch.no_grad()
    def merge(self) -> Prefix:
        """Fold the reparameterisation MLP away: a new prefix holding only the KV tensor (what is saved)."""
        merged = type(self)(dataclasses.replace(self.config, merged=True))
        merged.kv.copy_(self.kv_tensor())
        merged.base_model, merged.base_hidden_size = self.base_model, self.base_hidden_size
        return merged.eval()

    def check_model(self, lm: LanguageModel) -> None:
        """Refuse a model whose attention geometry differs from the one the prefix was trained for."""
        c, info = self.config, lm.info
        have = (c.num_layers, c.num_kv_heads, c.head_dim)
        want = (info.num_layers, info.num_kv_heads, info.head_dim)
        if have != want:
            raise LMControlError(
                f"prefix for '{self.base_model}' has (layers, kv heads, head dim) {have}, but '{info.name}' has {want}"
            )

    def parameter_counts(self, lm: LanguageModel) -> dict[str, float]:
        """Trainable parameters now, values stored after merging, and both as a share of the base model."""
        base = sum(p.numel() for p in lm.model.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        stored = self.config.kv_numel
        return {
            "base_parameters": base,
            "trainable_parameters": trainable,
            "stored_parameters": stored,
            "trainable_share_percent": 100.0 * trainable / base,
            "stored_share_percent": 100.0 * stored / base,
        }


class CompressedPrompt(Prefix):
    """A long prompt distilled into k soft key/value tokens (gisting, Mu et al. 2023)."""

    artifact_kind = "prefix.compressed"


def load_prefix(path: str, lm: LanguageModel | None = None) -> Prefix:
    """Load a ``prefix.kv`` or ``prefix.compressed`` artifact, refusing one made for another model than ``lm``."""
    from lmcontrol.artifacts import read_meta

    meta = read_meta(path)
    cls = CompressedPrompt if meta.kind == CompressedPrompt.artifact_kind else Prefix
    name = lm.info.name if lm is not None else None
    hidden = lm.info.hidden_size if lm is not None else None
    prefix = cls.from_pretrained(path, model_name=name, hidden_size=hidden)
    if lm is not None:
        prefix.check_model(lm)
    prefix.requires_grad_(False)
    return prefix
