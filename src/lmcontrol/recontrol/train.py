"""Train the RE-Control value network on rollout states with the Bellman loss (Kong et al. 2024, Sec. 4.2).

For a rollout with states s_0 .. s_{n-1} (``rollouts.py``) and final reward r, the value network is fit by

    L(phi) = sum_{t < n-1} ( V_phi(s_t) - sg[V_phi(s_{t+1})] )^2  +  ( V_phi(s_{n-1}) - r )^2      (eq. 8)

(sg = stop-gradient; no discount, reward only at the end). Minibatches draw states uniformly from the
training rollouts, so both kinds of term appear in proportion; the targets of the first kind are
recomputed with the current network at every step (a TD(0) target). A held-out tenth of the rollouts
gives the validation figures on the card: Bellman loss, terminal MSE and how well V(s_0) / V(s_{n-1})
rank the rewards.

Runs on ``lmcontrol.training.train_loop`` (Accelerate, checkpoints every ``checkpoint_every`` steps,
``resume=True`` continues exactly).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import torch

from lmcontrol import LMControlError
from lmcontrol.recontrol.config import ValueNetworkConfig
from lmcontrol.recontrol.model import ValueNetwork
from lmcontrol.recontrol.rollouts import Rollouts
from lmcontrol.training import TrainConfig, TrainResult, step_generator, train_loop

log = logging.getLogger(__name__)


@dataclasses.dataclass
class BellmanData:
    """Flat per-state tensors for the Bellman loss."""

    states: torch.Tensor  # (N, d) float32
    next_index: torch.Tensor  # (N,) long: index of s_{t+1}, or -1 for a final state
    reward: torch.Tensor  # (N,) float: r at final states, 0 elsewhere
    row: torch.Tensor  # (N,) long: which rollout a state belongs to
    first: torch.Tensor  # (R,) long: index of s_0 per rollout
    last: torch.Tensor  # (R,) long: index of s_{n-1} per rollout
    row_reward: torch.Tensor  # (R,)


def bellman_data(states: torch.Tensor, offsets: torch.Tensor, rewards: torch.Tensor) -> BellmanData:
    """Index a flat state table (N, d) with rollout ``offsets`` (R+1,) and ``rewards`` (R,)."""
    lengths = offsets.diff()  # (R,)
    if bool((lengths < 1).any()):
        raise LMControlError("a rollout has no states")
    n = int(offsets[-1])
    last = offsets[1:] - 1  # (R,)
    is_last = torch.zeros(n, dtype=torch.bool)
    is_last[last] = True
    next_index = torch.arange(1, n + 1).masked_fill(is_last, -1)  # (N,)
    row = torch.repeat_interleave(torch.arange(len(lengths)), lengths)  # (N,)
    reward = torch.zeros(n).index_put_((last,), rewards.float())
    return BellmanData(states.float(), next_index, reward, row, offsets[:-1].clone(), last, rewards.float())


def bellman_targets(value: torch.nn.Module, data: BellmanData, idx: torch.Tensor) -> torch.Tensor:
    """Targets for states ``idx`` (M,): sg[V(s_{t+1})] for non-final states, r for final ones. -> (M,)."""
    nxt = data.next_index[idx]  # (M,)
    final = nxt < 0
    with torch.no_grad():
        v_next = value(data.states[nxt.clamp_min(0)])  # (M,)
    return torch.where(final, data.reward[idx], v_next)


def bellman_loss(value: torch.nn.Module, data: BellmanData, idx: torch.Tensor) -> torch.Tensor:
    """Mean of (V(s_t) - target_t)^2 over the states ``idx`` (eq. 8)."""
    target = bellman_targets(value, data, idx)
    return (value(data.states[idx]) - target).pow(2).mean()


def split_rows(n_rows: int, val_fraction: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint (train, val) rollout indices."""
    perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n_rows * val_fraction))) if n_rows > 1 else 0
    return perm[n_val:], perm[:n_val]


def _rank_corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman correlation."""
    if len(a) < 3:
        return float("nan")
    ra, rb = a.argsort().argsort().float(), b.argsort().argsort().float()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-12))


@torch.no_grad()
def evaluate_value(value: ValueNetwork, data: BellmanData, rows: torch.Tensor) -> dict[str, float]:
    """Bellman loss, terminal MSE and reward rank correlations of V on the rollouts ``rows``."""
    value.eval()
    mask = torch.isin(data.row, rows)
    idx = mask.nonzero().squeeze(1)
    first, last, r = data.first[rows], data.last[rows], data.row_reward[rows]
    v_last, v_first = value(data.states[last]), value(data.states[first])
    return {
        "bellman_loss": float(bellman_loss(value, data, idx)),
        "terminal_mse": float((v_last - r).pow(2).mean()),
        "reward_var": float(r.var()) if len(r) > 1 else float("nan"),
        "spearman_v_first": _rank_corr(v_first, r),
        "spearman_v_last": _rank_corr(v_last, r),
    }


def train_value_network(
    rollouts: Rollouts,
    reward_name: str | None,
    value_config: ValueNetworkConfig,
    train_config: TrainConfig,
    work_dir: str | Path,
    *,
    batch_size: int = 512,
    resume: bool = False,
) -> tuple[ValueNetwork, dict[str, Any], TrainResult]:
    """Fit V on ``rollouts`` labelled with ``reward_name``; returns (value net, metrics, train result)."""
    rewards = rollouts.rewards(reward_name)
    if not bool(torch.isfinite(rewards).all()):
        raise LMControlError("some rollout rewards are not finite")
    data = bellman_data(rollouts.states, rollouts.offsets, rewards)
    train_rows, val_rows = split_rows(len(rewards), seed=train_config.seed)
    train_idx = torch.isin(data.row, train_rows).nonzero().squeeze(1)  # (N_train,)
    torch.manual_seed(train_config.seed)
    value = ValueNetwork(value_config)
    value.set_input_stats(data.states[train_idx])

    def batch_fn(step: int, rank: int, world: int) -> torch.Tensor:
        g = step_generator(train_config.seed, step, rank)
        return train_idx[torch.randint(len(train_idx), (batch_size,), generator=g)]

    def loss_fn(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
        return bellman_loss(model, data, idx)

    result = train_loop(
        value, loss_fn, batch_fn, train_config, work_dir, resume=resume, description="recontrol value network"
    )
    metrics: dict[str, Any] = {f"val_{k}": v for k, v in evaluate_value(value, data, val_rows).items()}
    metrics.update(
        {
            f"train_{k}": v
            for k, v in evaluate_value(value, data, train_rows).items()
            if k in ("bellman_loss", "terminal_mse")
        }
    )
    metrics.update(
        {
            "rollouts": len(rewards),
            "states": int(data.states.shape[0]),
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            "final_train_loss": result.final_loss,
        }
    )
    log.info(
        "value network: %s",
        {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in metrics.items()},
    )
    return value, metrics, result
