"""MAUVE (Pillutla et al. 2021): how close the distribution of generations is to that of human text.

``mauve-text``'s ``compute_mauve`` quantises both feature sets into k-means buckets (after PCA) and integrates
the divergence frontier between the two histograms. It would normally featurise texts itself with GPT-2 large
(a download); here features are always passed in precomputed (``p_features``/``q_features``) from one of:

- ``"encoder"`` (default): the packaged all-MiniLM-L6-v2 sentence embeddings (or any sentence encoder);
- ``"lm"``: mean-pooled final-norm hidden states of a causal LM (default the embedded model) — the paper's
  recipe uses GPT-2 large's last-token state; mean pooling is steadier for a small LM.

P is the human reference text, Q the generations, both as ``prompt + continuation``. MAUVE is noisy below a
few hundred samples per side (the paper uses 5,000); ``num_buckets`` defaults to n/10 as in mauve-text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np


@dataclasses.dataclass(frozen=True)
class MauveConfig:
    features: Literal["encoder", "lm"] = "encoder"
    model: str | None = (
        None  # encoder (features="encoder") or causal LM (features="lm"); None = packaged default
    )
    scaling: float = 5.0  # mauve's constant c
    seed: int = 25
    batch_size: int = 16
    max_tokens: int = 256  # LM features: tokens per text


def lm_features(
    texts: Sequence[str], model: str | None = None, batch_size: int = 16, max_tokens: int = 256
) -> np.ndarray:
    """Mean-pooled final-norm hidden states (N, d) of a causal LM over each text's tokens."""
    import torch

    from lmcontrol import hf_adapter as hf
    from lmcontrol.generation import positions_from_mask
    from lmcontrol.models import load_lm

    lm = load_lm(model)
    feats = []
    for start in range(0, len(texts), batch_size):
        enc = lm.tokenizer(
            list(texts[start : start + batch_size]),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_tokens,
        )
        mask = enc["attention_mask"]  # (B, T)
        with torch.no_grad():
            h = hf.decoder(lm.model)(
                input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions_from_mask(mask)
            ).last_hidden_state  # (B, T, d)
        m = mask[..., None].to(h.dtype)  # (B, T, 1)
        feats.append((h * m).sum(1) / m.sum(1).clamp(min=1))  # (B, d)
    return torch.cat(feats).float().numpy()


def featurize(texts: Sequence[str], config: MauveConfig = MauveConfig()) -> np.ndarray:
    if config.features == "lm":
        return lm_features(texts, config.model, config.batch_size, config.max_tokens)
    if config.features == "encoder":
        from lmcontrol.eval.embeddings import embed

        return embed(texts, config.model)
    raise ValueError(f"unknown MAUVE features '{config.features}' (use 'encoder' or 'lm')")


def mauve_score(human: Sequence[str], generated: Sequence[str], config: MauveConfig = MauveConfig()) -> float:
    """MAUVE in [0, 1] between human texts (P) and generations (Q); higher = closer."""
    import mauve

    if len(human) < 2 or len(generated) < 2:
        raise ValueError("MAUVE needs at least 2 texts on each side")
    p, q = featurize(human, config), featurize(generated, config)
    out = mauve.compute_mauve(
        p_features=p,
        q_features=q,
        mauve_scaling_factor=config.scaling,
        seed=config.seed,
        verbose=False,
        device_id=-1,
    )
    return float(out.mauve)
