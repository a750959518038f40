"""Train the RE-Control value network on rollout states with the Bellman loss (Kong et al. 2024, Sec. 4.2).

For a rollout with states s_0 .. s_{n-1} (``rollouts.py``) and final reward r, the value network is fit by

    L(phi) = sum_{t < n-1} ( V_phi(s_t) - sg[V_phi(s_{t+1})] )^2  +  ( V_phi(s_{n-1}) - r )^2      (eq. 8)

(sg = stop-gradient; no discount, reward only at the end). Minibatches draw states uniformly from the
training rollouts, so both kinds of term appear in proportion; the targets of the first kind are
recomputed with the current network at every step (a TD(0) target). ``ValueTrainConfig.target = "mc"``
regresses every state on r instead (the Monte-Carlo return).

With several rollouts per prompt, ``baseline = "prompt"`` replaces r by the advantage
r - mean(r of the same prompt's rollouts): the part of the reward the prompt decides is the same for all
of a prompt's rollouts and cancels, so V (and its gradient, which is the control) has to learn what in the
*response* raises the reward. Without it, V(s_0) — a state before any response token — already ranks the
rewards well, and the gradient mostly points along prompt features.

Held-out *prompts* (all their rollouts; ``val_fraction``) give the validation figures on the card: Bellman
loss, terminal MSE, how well V(s_0) / V(s_mid) / V(s_{n-1}) rank the targets, and how well V(s_{n-1}) ranks
a prompt's rollouts among themselves (``spearman_within_prompt``, both sides centred per prompt).

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
from lmcontrol.recontrol.config import ValueNetworkConfig, ValueTrainConfig
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


def prompt_baseline(prompts: list[str], rewards: torch.Tensor) -> torch.Tensor:
    """Advantages (R,): each reward minus the mean reward of the rollouts with the same prompt."""
    if len(prompts) != len(rewards):
        raise LMControlError(f"{len(prompts)} prompts but {len(rewards)} rewards")
    keys = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    group = torch.tensor([keys[p] for p in prompts])  # (R,)
    sums = torch.zeros(len(keys)).index_add_(0, group, rewards.float())
    counts = torch.zeros(len(keys)).index_add_(0, group, torch.ones(len(rewards)))
    if bool((counts < 2).any()):
        log.warning("baseline=prompt: %d prompt(s) have a single rollout (advantage 0)", int((counts < 2).sum()))
    return rewards.float() - (sums / counts)[group]


def training_rewards(rollouts: Rollouts, reward_name: str | None, baseline: str = "none") -> torch.Tensor:
    """The per-rollout regression targets (R,): the reward, or its per-prompt advantage."""
    rewards = rollouts.rewards(reward_name)
    if not bool(torch.isfinite(rewards).all()):
        raise LMControlError("some rollout rewards are not finite")
    if baseline == "prompt":
        return prompt_baseline([str(r["prompt"]) for r in rollouts.rows], rewards)
    return rewards.float()


def bellman_targets(
    value: torch.nn.Module, data: BellmanData, idx: torch.Tensor, target: str = "bellman"
) -> torch.Tensor:
    """Targets for states ``idx`` (M,): sg[V(s_{t+1})] for non-final states and r for final ones (eq. 8),
    or r for every state with ``target="mc"``. -> (M,)."""
    if target == "mc":
        return data.row_reward[data.row[idx]]
    nxt = data.next_index[idx]  # (M,)
    final = nxt < 0
    with torch.no_grad():
        v_next = value(data.states[nxt.clamp_min(0)])  # (M,)
    return torch.where(final, data.reward[idx], v_next)


def bellman_loss(
    value: torch.nn.Module, data: BellmanData, idx: torch.Tensor, target: str = "bellman"
) -> torch.Tensor:
    """Mean of (V(s_t) - target_t)^2 over the states ``idx`` (eq. 8; Monte-Carlo with ``target="mc"``)."""
    goal = bellman_targets(value, data, idx, target)
    return (value(data.states[idx]) - goal).pow(2).mean()


def split_rows(
    n_rows: int, val_fraction: float = 0.1, seed: int = 0, groups: list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint (train, val) rollout indices; with ``groups`` (e.g. each row's prompt) whole groups go to
    one side, so validation prompts are never seen in training."""
    if n_rows <= 1 or val_fraction <= 0:
        return torch.arange(n_rows), torch.zeros(0, dtype=torch.long)
    keys = list(dict.fromkeys(groups)) if groups is not None else list(range(n_rows))
    perm = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(len(keys) * val_fraction)))
    val_keys = {keys[int(i)] for i in perm[:n_val]}
    member = groups if groups is not None else list(range(n_rows))
    is_val = torch.tensor([m in val_keys for m in member])  # (R,)
    return (~is_val).nonzero().squeeze(1), is_val.nonzero().squeeze(1)


def _rank_corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman correlation."""
    if len(a) < 3:
        return float("nan")
    ra, rb = a.argsort().argsort().float(), b.argsort().argsort().float()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-12))


def _centred(x: torch.Tensor, groups: list[str]) -> torch.Tensor:
    """x (R,) minus its mean within each group."""
    return prompt_baseline(groups, x) if groups else x


@torch.no_grad()
def evaluate_value(
    value: ValueNetwork,
    data: BellmanData,
    rows: torch.Tensor,
    target: str = "bellman",
    groups: list[str] | None = None,
) -> dict[str, float]:
    """Bellman loss, terminal MSE and target rank correlations of V on the rollouts ``rows``; with
    ``groups`` (every row's prompt) also the within-prompt rank correlation of V(s_{n-1})."""
    value.eval()
    if len(rows) == 0:
        return {}
    idx = torch.isin(data.row, rows).nonzero().squeeze(1)
    first, last, r = data.first[rows], data.last[rows], data.row_reward[rows]
    mid = (first + last) // 2
    v_last, v_first, v_mid = value(data.states[last]), value(data.states[first]), value(data.states[mid])
    out = {
        "bellman_loss": float(bellman_loss(value, data, idx)),
        "mc_loss": float(bellman_loss(value, data, idx, "mc")),
        "terminal_mse": float((v_last - r).pow(2).mean()),
        "reward_var": float(r.var()) if len(r) > 1 else float("nan"),
        "spearman_v_first": _rank_corr(v_first, r),
        "spearman_v_mid": _rank_corr(v_mid, r),
        "spearman_v_last": _rank_corr(v_last, r),
    }
    if groups is not None:
        g = [groups[int(i)] for i in rows]
        out["spearman_within_prompt"] = _rank_corr(_centred(v_last, g), _centred(r, g))
        out["spearman_within_prompt_mid"] = _rank_corr(_centred(v_mid, g), _centred(r, g))
    return out


def train_value_network(
    rollouts: Rollouts,
    reward_name: str | None,
    value_config: ValueNetworkConfig,
    train_config: TrainConfig,
    work_dir: str | Path,
    *,
    value_train: ValueTrainConfig = ValueTrainConfig(),
    batch_size: int = 512,
    resume: bool = False,
) -> tuple[ValueNetwork, dict[str, Any], TrainResult]:
    """Fit V on ``rollouts`` labelled with ``reward_name``; returns (value net, metrics, train result).

    Args:
        rollouts: states and rewards (``load_rollouts``).
        reward_name: which recorded reward (None = the first).
        value_config: the network's shape.
        train_config: optimiser, steps, checkpoints, seed.
        work_dir: checkpoints (``resume=True`` continues from them).
        value_train: target (Bellman / Monte-Carlo), per-prompt baseline, validation share.
        batch_size: states per minibatch.
    """
    rewards = training_rewards(rollouts, reward_name, value_train.baseline)
    raw = rollouts.rewards(reward_name)
    prompts = [str(r["prompt"]) for r in rollouts.rows]
    data = bellman_data(rollouts.states, rollouts.offsets, rewards)
    train_rows, val_rows = split_rows(len(rewards), value_train.val_fraction, train_config.seed, prompts)
    train_idx = torch.isin(data.row, train_rows).nonzero().squeeze(1)  # (N_train,)
    torch.manual_seed(train_config.seed)
    value = ValueNetwork(value_config)
    value.set_input_stats(data.states[train_idx])

    def batch_fn(step: int, rank: int, world: int) -> torch.Tensor:
        g = step_generator(train_config.seed, step, rank)
        return train_idx[torch.randint(len(train_idx), (batch_size,), generator=g)]

    def loss_fn(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
        return bellman_loss(model, data, idx, value_train.target)

    result = train_loop(
        value, loss_fn, batch_fn, train_config, work_dir, resume=resume, description="recontrol value network"
    )
    target = value_train.target
    metrics: dict[str, Any] = {
        f"val_{k}": v for k, v in evaluate_value(value, data, val_rows, target, prompts).items()
    }
    metrics.update(
        {
            f"train_{k}": v
            for k, v in evaluate_value(value, data, train_rows, target, prompts).items()
            if k in ("bellman_loss", "mc_loss", "terminal_mse", "spearman_within_prompt")
        }
    )
    metrics.update(
        {
            "rollouts": len(rewards),
            "prompts": len(set(prompts)),
            "states": int(data.states.shape[0]),
            "reward_mean": float(raw.mean()),
            "reward_std": float(raw.std()),
            "target_std": float(rewards.std()),
            "value_target": target,
            "baseline": value_train.baseline,
            "final_train_loss": result.final_loss,
        }
    )
    log.info(
        "value network: %s",
        {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in metrics.items()},
    )
    return value, metrics, result
