"""The test-time alignment baselines RE-Control is compared with (Kong et al. 2024, Sec. 6.1), same API.

- ``system[:TEXT]`` — prompting: a helpful-and-harmless system message (commas in TEXT are kept).
- ``static-re:DIR[,scale=S]`` — static representation editing: add ``S * delta`` to every new state, where
  delta is the mean edit-site state of high-reward rollout tokens minus that of low-reward ones (an
  ITI-style fixed direction; ``train recontrol`` saves it under ``DIR/static_re``).
- ``cd:DIR[,topk=K]`` — controlled decoding with the value net as prefix scorer (Mudgal et al. 2023): look
  ahead one token for each of the top-K candidates (``ctx.lookahead_hidden``: one batched forward of B*K
  tokens, real cache untouched) and pick the candidate whose state has the highest value, V(s_{t+1}(z)).
- ``cd-prefix:DIR[,topk=K][,beta=B]`` — the soft, KL-regularised form of the same prefix scorer (Mudgal et
  al. 2023: pi(z | x, y) ~ p(z | x, y) exp(beta * V([x, y, z]))): beta times the value of each extended
  prefix is added to the top-K logits, so the LM's own preference still counts (subtracting the current
  prefix's value V(s_t) would shift every candidate equally and change nothing). The RE-Control paper's
  "CD" scores candidates with the reward model itself, far too slow here; both variants use the learned
  prefix scorer, as its "CD prefix" does.
- ``best-of:N[,reward=NAME]`` — sample N responses per prompt, keep the one the reward scores highest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lmcontrol import LMControlError
from lmcontrol.artifacts import load_artifact, save_artifact
from lmcontrol.controls import Control, ControlSpec, StepContext
from lmcontrol.recontrol.model import ValueNetwork

if TYPE_CHECKING:
    from lmcontrol.models import LanguageModel

log = logging.getLogger(__name__)

HH_SYSTEM_PROMPT = (
    "You are a helpful, honest and harmless assistant. Answer the user's question helpfully and politely. "
    "Never help with anything dangerous, illegal, unethical or hurtful; instead, briefly explain why "
    "and offer a safe alternative."
)
STATIC_KIND = "recontrol.static_direction"
STATIC_SUBDIR = "static_re"


class SystemPrompt(Control):
    """Prompting baseline: a system message joined with any other controls' system messages."""

    name = "system"

    def __init__(self, text: str = HH_SYSTEM_PROMPT) -> None:
        self.text = text

    def system_prompt(self) -> str | None:
        return self.text


def system_from_spec(spec: ControlSpec, lm: LanguageModel) -> SystemPrompt:
    """``system`` (the default HH prompt) or ``system:TEXT``."""
    del lm
    text = spec.text.partition(":")[2].strip()
    return SystemPrompt(text or HH_SYSTEM_PROMPT)


# ---------------------------------------------------------------------------------------------------------
# static representation editing


def static_direction(
    states: torch.Tensor, offsets: torch.Tensor, rewards: torch.Tensor, quantile: float = 0.25
) -> torch.Tensor:
    """Mean state of the top-``quantile`` responses by reward minus that of the bottom ones. -> (d,)."""
    lo, hi = torch.quantile(rewards, quantile), torch.quantile(rewards, 1 - quantile)
    row_of = torch.repeat_interleave(torch.arange(len(rewards)), offsets.diff())  # (N,) row of each state
    r_tok = rewards[row_of]  # (N,)
    s = states.float()
    return s[r_tok >= hi].mean(0) - s[r_tok <= lo].mean(0)


def save_static_direction(
    path: str | Path,
    direction: torch.Tensor,
    *,
    base_model: str,
    site: str,
    reward: str,
    data: str,
    scale: float = 0.5,
    command: str | None = None,
) -> Path:
    return save_artifact(
        path,
        kind=STATIC_KIND,
        tensors={"direction": direction},
        base_model=base_model,
        hidden_size=int(direction.shape[0]),
        config={"site": site, "reward": reward},
        data=data,
        command=command,
        metrics={"direction_norm": float(direction.norm())},
        extra={"scale": scale},
        description="Static representation editing (RE-Control baseline): mean state difference between "
        "high- and low-reward rollout tokens, added to every new token's state with a scale.",
    )


class StaticEdit(Control):
    """Adds ``scale * direction`` to the new token's state."""

    name = "static-re"

    def __init__(self, direction: torch.Tensor, scale: float = 1.0, site: str = "final") -> None:
        self.direction = direction.float()
        self.scale = scale
        self.hidden_site = site

    def edit_hidden(self, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return (h.float() + self.scale * self.direction).to(h.dtype)


def static_re_from_spec(spec: ControlSpec, lm: LanguageModel) -> StaticEdit:
    """``static-re:DIR[,scale=S]``: DIR is a static-direction artifact or a recontrol artifact holding one."""
    spec.check_keys(["scale"])
    if not spec.args:
        raise LMControlError(f"--control {spec.text}: give the artifact directory, e.g. static-re:DIR")
    path = Path(spec.args[0])
    if (path / STATIC_SUBDIR).is_dir():
        path = path / STATIC_SUBDIR
    meta, tensors = load_artifact(
        path, kind=STATIC_KIND, model_name=lm.info.name, hidden_size=lm.info.hidden_size
    )
    default_scale = float(meta.extra.get("scale", 1.0)) if meta.extra else 1.0
    scale = spec.float("scale", default_scale)
    return StaticEdit(tensors["direction"], scale, str(meta.config.get("site", "final")))


# ---------------------------------------------------------------------------------------------------------
# controlled decoding


class ControlledDecoding(Control):
    """Top-k candidates re-scored by the value of the state each would lead to (see module docstring)."""

    name = "cd"

    def __init__(self, value: ValueNetwork, topk: int = 5, beta: float | None = None) -> None:
        self.value = value.eval().requires_grad_(False)
        self.topk = topk
        self.beta = beta  # None = hard re-ranking (cd); a number = soft blend (cd-prefix)

    def process_logits(self, logits: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        k = min(self.topk, logits.shape[-1])
        top = logits.topk(k, dim=-1)  # values/indices (B, k)
        s_next = ctx.lookahead_hidden(top.indices)  # (B, k, d)
        v_next = self.value(s_next)  # (B, k)
        if self.beta is None:
            scores = v_next + 1e-3 * top.values.log_softmax(-1)  # value decides; LM logit breaks ties
        else:
            scores = top.values + self.beta * v_next  # log p(z) + beta V(s_{t+1}(z))
        out = torch.full_like(logits, float("-inf"))
        return out.scatter(1, top.indices, scores.to(out.dtype))


def cd_from_spec(spec: ControlSpec, lm: LanguageModel) -> ControlledDecoding:
    """``cd:DIR[,topk=K]``."""
    from lmcontrol.recontrol.control import value_from_spec

    spec.check_keys(["topk"])
    return ControlledDecoding(value_from_spec(spec, lm), topk=spec.int("topk", 5, min_value=1))


def cd_prefix_from_spec(spec: ControlSpec, lm: LanguageModel) -> ControlledDecoding:
    """``cd-prefix:DIR[,topk=K][,beta=B]``."""
    from lmcontrol.recontrol.control import value_from_spec

    spec.check_keys(["topk", "beta"])
    cd = ControlledDecoding(
        value_from_spec(spec, lm),
        topk=spec.int("topk", 5, min_value=1),
        beta=spec.float("beta", 1.0, positive=True),
    )
    cd.name = "cd-prefix"
    return cd


# ---------------------------------------------------------------------------------------------------------
# best-of-N


class BestOfN(Control):
    """Sample N candidates per prompt and keep the one with the highest reward."""

    name = "best-of"

    def __init__(
        self, n: int, reward: Callable[[list[str], list[str]], list[float]], temperature: float = 0.7
    ):
        self.num_candidates = n
        self.reward = reward
        self.candidate_temperature = temperature

    def select(self, prompts: list[str], candidates: list[list[str]]) -> list[int]:
        flat_p = [p for p, c in zip(prompts, candidates, strict=True) for _ in c]
        flat_c = [x for c in candidates for x in c]
        scores = self.reward(flat_p, flat_c)
        choice, i = [], 0
        for c in candidates:
            part = scores[i : i + len(c)]
            choice.append(max(range(len(c)), key=part.__getitem__))
            i += len(c)
        return choice


def best_of_from_spec(spec: ControlSpec, lm: LanguageModel) -> BestOfN:
    """``best-of:N[,reward=NAME][,temperature=T]`` (default reward: hh)."""
    from lmcontrol.eval.reward import load_reward

    del lm
    spec.check_keys(["reward", "temperature"])
    try:
        n = int(spec.args[0]) if spec.args else 4
    except ValueError:
        raise LMControlError(f"--control {spec.text}: N must be an integer, got {spec.args[0]!r}") from None
    if n < 1:
        raise LMControlError(f"--control {spec.text}: N must be >= 1, got {n}")
    return BestOfN(
        n,
        load_reward(spec.str("reward", "hh") or "hh"),
        temperature=spec.float("temperature", 0.7, positive=True),
    )
