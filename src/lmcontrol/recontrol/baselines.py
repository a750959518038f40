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

``system`` and ``best-of`` are the spine's generic controls (``lmcontrol.steering``); static RE is a
``SteeringVector`` and both CD variants are a ``TopKRescoring`` with the value network as the candidate scorer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lmcontrol import LMControlError
from lmcontrol.artifacts import load_artifact, save_artifact
from lmcontrol.controls import ControlSpec, StepContext
from lmcontrol.recontrol.model import ValueNetwork
from lmcontrol.steering import (  # noqa: F401 - re-exported: the generic controls RE-Control is compared with
    HH_SYSTEM_PROMPT,
    BestOfN,
    SteeringVector,
    SystemPrompt,
    TopKRescoring,
    best_of_from_spec,
    system_from_spec,
)

if TYPE_CHECKING:
    from lmcontrol.models import LanguageModel

log = logging.getLogger(__name__)

STATIC_KIND = "recontrol.static_direction"
STATIC_SUBDIR = "static_re"


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


class StaticEdit(SteeringVector):
    """Adds ``scale * direction`` to the new token's state (a ``SteeringVector`` with a reward direction)."""

    name = "static-re"


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


class ControlledDecoding(TopKRescoring):
    """Top-k candidates re-scored by the value of the state each would lead to (see module docstring):
    ``beta=None`` ranks by V(s_{t+1}(z)) with the LM's log-probability as a tie-break (cd); a number adds
    beta · V to the logits (cd-prefix)."""

    name = "cd"

    def __init__(self, value: ValueNetwork, topk: int = 5, beta: float | None = None) -> None:
        self.value = value.eval().requires_grad_(False)
        self.beta = beta
        lm_term, weight = ("tiebreak", 1.0) if beta is None else ("logits", beta)
        super().__init__(self.next_state_value, top_k=topk, weight=weight, lm_term=lm_term)

    def next_state_value(self, candidates: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """V(s_{t+1}(z)) (B, k) from one batched lookahead of the candidates."""
        return self.value(ctx.lookahead_hidden(candidates))


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
