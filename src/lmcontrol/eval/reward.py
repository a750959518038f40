"""Reward functions: ``load_reward(name) -> RewardFn``, one signature for every scorer of a response.

``RewardFn = Callable[[list[str], list[str]], list[float]]`` takes prompts and responses (same length) and
returns one score per pair, higher = better. Names:

==================== ==================================================================================
``hh``               the Bradley-Terry HH-RLHF reward model below (``artifacts/hh-reward``)
``harmless``         1 - toxicity of the response (the ported Jigsaw BiLSTM, ``lmcontrol.eval.toxicity``)
``sentiment``        P(positive) of the response under the SST-2 probe (``artifacts/probe-sst2``)
``hf:<id or path>``  an ``AutoModelForSequenceClassification`` on (prompt, response) text pairs: the logit
                     if it has one output, else the probability of its last label
``py:module:func``   any importable callable with the ``RewardFn`` signature
==================== ==================================================================================

Named rewards live in ``lmcontrol.registry.REWARDS`` (``register_reward(name, factory)``, where ``factory()``
returns the ``RewardFn``), so a plugin or an installed package can add one.

The **Bradley-Terry reward model** (Bradley & Terry 1952; as in Ouyang et al. 2022 but tiny): a frozen
all-MiniLM-L6-v2 embeds the last human turn ``p`` and the response ``r`` separately; a small ensemble of MLP
heads scores ``[e_p, e_r, e_p ⊙ e_r, ℓ, ℓ e_p]`` (ℓ = log response length; 1537-d). Trained on HH-RLHF
chosen/rejected pairs with ``-log σ(r(chosen) - r(rejected))`` (``lmcontrol.eval.reward_train``); the
held-out pairwise accuracy is on the card: 0.558, short of the 0.60 goal — HH preferences are noisy, and 3.3k
training pairs over frozen MiniLM features leave little to learn (docs/evaluation.md lists what we tried).
Only the last human turn is used because MiniLM reads at most 256 word pieces: whole dialogues would be cut
before the question being answered. A prompt without ``Human:`` markers is used as it is.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import re
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from lmcontrol import LMControlError
from lmcontrol.artifacts import PretrainedMixin
from lmcontrol.settings import ARTIFACTS_DIR

RewardFn = Callable[[list[str], list[str]], list[float]]

HH_REWARD_DIR = ARTIFACTS_DIR / "hh-reward"
SPEC_REWARDS = ("hf:<model id or path>", "py:module:function")  # reward specs besides the registered names
_TURN_RE = re.compile(r"(?:^|\n)\s*(Human|Assistant):", re.IGNORECASE)


def last_human_turn(prompt: str) -> str:
    """The last ``Human:`` turn of an HH-style dialogue, or the whole prompt if it has no such marker."""
    parts = _TURN_RE.split(prompt)  # [before, role, text, role, text, ...]
    turns = [
        text.strip() for role, text in zip(parts[1::2], parts[2::2], strict=True) if role.lower() == "human"
    ]
    turns = [t for t in turns if t]
    return turns[-1] if turns else prompt.strip()


def length_feature(responses: Sequence[str]) -> torch.Tensor:
    """ℓ = log(1 + words) / 5 per response, (B, 1) — about 1 for a 150-word reply."""
    return torch.tensor([[math.log1p(len(r.split())) / 5.0] for r in responses], dtype=torch.float32)


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """The Bradley-Terry heads over frozen sentence embeddings."""

    input_dim: int = 384  # encoder width d; each head sees 4d + 1 features
    hidden: int = 64
    heads: int = 4  # an ensemble of independently initialised heads; the reward is their mean
    dropout: float = 0.3
    encoder: str = "all-MiniLM-L6-v2"

    def __post_init__(self) -> None:
        if self.input_dim < 1 or self.hidden < 1 or self.heads < 1 or not 0 <= self.dropout < 1:
            raise LMControlError(f"bad reward config: {self}")


class BTRewardModel(nn.Module, PretrainedMixin):
    """Bradley-Terry reward model: MLP heads over [e_p, e_r, e_p * e_r, ℓ, ℓ e_p] (ℓ = reply length)."""

    artifact_kind = "reward.bt"
    config_class = RewardConfig

    def __init__(self, config: RewardConfig) -> None:
        super().__init__()
        self.config = config
        n_in = 4 * config.input_dim + 1
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Dropout(config.dropout),
                nn.Linear(n_in, config.hidden),
                nn.GELU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden, 1),
            )
            for _ in range(config.heads)
        )

    @staticmethod
    def features(e_prompt: torch.Tensor, e_response: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """(B, d), (B, d), (B, 1) -> (B, 4d + 1). The ℓ e_p term lets the preferred length depend on the
        request (HH: longer replies win on helpful-base, shorter ones on harmless-base)."""
        return torch.cat([e_prompt, e_response, e_prompt * e_response, length, length * e_prompt], dim=-1)

    def forward(self, features: torch.Tensor, head: int | None = None) -> torch.Tensor:
        """Rewards (B,) from features (B, 4d + 1): one head's, or the mean over heads."""
        if head is not None:
            return self.heads[head](features).squeeze(-1)
        return torch.stack([h(features).squeeze(-1) for h in self.heads]).mean(0)

    def featurize(
        self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 64
    ) -> torch.Tensor:
        from lmcontrol.eval.embeddings import embed
        from lmcontrol.models import encoder_id

        enc = None if self.config.encoder == encoder_id(None) else self.config.encoder
        e_p = torch.from_numpy(embed([last_human_turn(p) for p in prompts], enc, batch_size))  # (B, d)
        e_r = torch.from_numpy(embed(list(responses), enc, batch_size))  # (B, d)
        return self.features(e_p, e_r, length_feature(responses))

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 64) -> list[float]:
        """One reward per (prompt, response)."""
        return self(self.featurize(prompts, responses, batch_size)).tolist()


@functools.lru_cache(maxsize=2)
def load_bt_reward(path: str | None = None) -> BTRewardModel:
    """The Bradley-Terry reward model (default ``artifacts/hh-reward``)."""
    target = HH_REWARD_DIR if path is None else path
    if path is None and not HH_REWARD_DIR.is_dir():
        raise LMControlError(
            f"the hh reward model is not trained yet: lmcontrol train reward --out {HH_REWARD_DIR}"
        )
    return BTRewardModel.from_pretrained(target)


def _checked(fn: RewardFn, name: str) -> RewardFn:
    """Wrap a reward so every caller gets the same length checks and float outputs."""

    def reward(prompts: list[str], responses: list[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise LMControlError(f"reward '{name}': {len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return []
        scores = list(fn(list(prompts), list(responses)))
        if len(scores) != len(prompts):
            raise LMControlError(f"reward '{name}' returned {len(scores)} scores for {len(prompts)} pairs")
        return [float(s) for s in scores]

    reward.__name__ = f"reward_{re.sub(r'[^0-9a-zA-Z_]', '_', name)}"
    return reward


def _hh(prompts: list[str], responses: list[str]) -> list[float]:
    return load_bt_reward().score(prompts, responses)


def hh_reward() -> RewardFn:
    """The ``hh`` reward; fails now, not at the first call, if the artifact is missing."""
    load_bt_reward()
    return _hh


def harmless_reward() -> RewardFn:
    return _harmless


def sentiment_reward() -> RewardFn:
    return _sentiment


def _harmless(prompts: list[str], responses: list[str]) -> list[float]:
    from lmcontrol.eval.toxicity import get_toxicity_scorer

    return [1.0 - t for t in get_toxicity_scorer().score(responses)]


def _sentiment(prompts: list[str], responses: list[str]) -> list[float]:
    from lmcontrol.eval.sentiment import positive_probability

    return positive_probability(responses)


@functools.lru_cache(maxsize=2)
def _hf_model(name: str) -> tuple[object, object]:
    from pathlib import Path

    from lmcontrol.models import local_only, refuse_pickle_weights

    refuse_pickle_weights(Path(name), "reward model")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    offline = local_only(name)  # never reach the network for a local path or when the hub is unreachable
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=offline)
        model = AutoModelForSequenceClassification.from_pretrained(
            name, use_safetensors=True, local_files_only=offline
        ).eval()
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise LMControlError(f"reward model 'hf:{name}' could not be loaded ({first})") from None
    return model, tokenizer


def _hf_reward(name: str) -> RewardFn:
    def reward(prompts: list[str], responses: list[str], batch_size: int = 16) -> list[float]:
        model, tokenizer = _hf_model(name)
        out: list[float] = []
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(  # type: ignore[operator]
                prompts[i : i + batch_size],
                responses[i : i + batch_size],
                truncation=True,
                padding=True,
                return_tensors="pt",
            )
            with torch.no_grad():
                logits = model(**enc).logits.float()  # type: ignore[operator]  # (B, L)
            out += (logits[:, 0] if logits.shape[-1] == 1 else logits.softmax(-1)[:, -1]).tolist()
        return out

    return reward


def _py_reward(target: str) -> RewardFn:
    module_name, _, func_name = target.rpartition(":")
    if not module_name or not func_name:
        raise LMControlError(f"bad reward 'py:{target}': use py:module:function")
    try:
        fn = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as e:
        raise LMControlError(f"reward 'py:{target}' could not be imported ({e})") from None
    if not callable(fn):
        raise LMControlError(f"reward 'py:{target}' is not callable")
    return fn


def load_reward(name: str, *, allow_python: bool = True) -> RewardFn:
    """A reward function by name (see the module docstring); unknown names raise listing the known ones.

    ``allow_python=False`` refuses ``py:module:function`` (it imports and runs code named by the caller): a
    server passes it, so a request can never name code to run.
    """
    from lmcontrol.registry import REWARDS

    name = name.strip()
    if name in REWARDS:
        return _checked(REWARDS.get(name).factory(), name)
    if name.startswith("hf:") and len(name) > 3:
        return _checked(_hf_reward(name[3:]), name)
    if name.startswith("py:"):
        if not allow_python:
            raise LMControlError(f"reward '{name}' is refused here: py:module:function rewards run local code")
        return _checked(_py_reward(name[3:]), name)
    known = [*sorted(REWARDS.entries()), *SPEC_REWARDS]
    raise LMControlError(f"unknown reward '{name}' (known: {', '.join(known)})")


def pairwise_accuracy(chosen: np.ndarray, rejected: np.ndarray) -> float:
    """Share of pairs where the chosen response scores higher (ties count half)."""
    chosen, rejected = np.asarray(chosen, dtype=float), np.asarray(rejected, dtype=float)
    return float(((chosen > rejected) + 0.5 * (chosen == rejected)).mean()) if len(chosen) else float("nan")
