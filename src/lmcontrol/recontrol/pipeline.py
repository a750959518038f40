"""The ``train recontrol`` pipeline: roll out, label, fit V, save the value net and the static-RE direction.

Each stage resumes: rollout shards already on disk are kept, rows already labelled are not re-scored, and
``resume=True`` continues the value-network optimisation from its last checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from lmcontrol import LMControlError
from lmcontrol.recontrol.config import RolloutConfig, ValueNetworkConfig, ValueTrainConfig

log = logging.getLogger(__name__)


def run_training(
    *,
    prompts: str,
    reward: str,
    out: Path,
    work_dir: Path,
    model: str | None,
    n_prompts: int,
    max_new_tokens: int,
    rollout_temperature: float,
    rollout_batch: int,
    site: str,
    rollout_samples: int = 1,
    rollout_top_p: float = 0.95,
    value_target: str = "bellman",
    baseline: str = "none",
    depth: int,
    width: int,
    activation: str,
    steps: int,
    lr: float,
    batch_size: int,
    checkpoint_every: int,
    step_size: float,
    control_steps: int,
    weight_decay: float = 0.0,
    static_scale: float = 0.5,
    seed: int,
    threads: int,
    resume: bool,
) -> Path:
    """Run every stage and return the artifact path (arguments as in ``lmcontrol train recontrol --help``)."""
    from lmcontrol.artifacts import current_command
    from lmcontrol.eval.reward import load_reward
    from lmcontrol.models import load_lm
    from lmcontrol.recontrol.baselines import STATIC_SUBDIR, save_static_direction, static_direction
    from lmcontrol.recontrol.config import ReControlConfig
    from lmcontrol.recontrol.rollouts import collect_rollouts, hh_prompt_split, label_rollouts, load_rollouts
    from lmcontrol.recontrol.train import train_value_network, training_rewards
    from lmcontrol.training import TrainConfig

    torch.set_num_threads(max(1, threads))
    ReControlConfig(step_size=step_size, steps=control_steps, site=site)  # validate before the long work
    train_cfg = TrainConfig(
        steps=steps, lr=lr, weight_decay=weight_decay, checkpoint_every=checkpoint_every, seed=seed
    )
    value_cfg_args = {"depth": depth, "width": width, "activation": activation}
    ValueNetworkConfig(**value_cfg_args)
    value_train = ValueTrainConfig(target=value_target, baseline=baseline)
    reward_fn = load_reward(reward)  # unknown names fail here, before any rollout
    lm = load_lm(model)
    rollout_dir = Path(work_dir) / "rollouts"
    train_prompts = hh_prompt_split(prompts, "train")[:n_prompts]
    cfg = RolloutConfig(
        prompts=prompts,
        max_new_tokens=max_new_tokens,
        temperature=rollout_temperature,
        top_p=rollout_top_p,
        samples=rollout_samples,
        batch_size=rollout_batch,
        site=site,
        seed=seed,
    )
    collect_rollouts(lm, train_prompts, rollout_dir, cfg)
    labelled = label_rollouts(rollout_dir, reward, reward_fn)
    log.info("labelled %d rollouts with reward '%s'", labelled, reward)
    rollouts = load_rollouts(rollout_dir)
    if (
        rollouts.meta.get("model") != lm.info.name
        or rollouts.meta.get("config", {}).get("site", site) != site
    ):
        raise LMControlError(
            f"rollouts in {rollout_dir} were made with model {rollouts.meta.get('model')!r} "
            f"at site {rollouts.meta.get('config', {}).get('site')!r}; use another --work-dir"
        )

    value_cfg = ValueNetworkConfig(hidden_size=lm.info.hidden_size, **value_cfg_args)
    value, metrics, result = train_value_network(
        rollouts,
        reward,
        value_cfg,
        train_cfg,
        Path(work_dir) / "value",
        value_train=value_train,
        batch_size=batch_size,
        resume=resume,
    )
    data = (
        f"{len(rollouts.rows)} rollouts ({rollout_samples} per prompt) of {lm.info.name} on "
        f"{len(train_prompts)} prompts of {prompts} ('train' part of hh_prompt_split; chat template; "
        f"T={rollout_temperature}, top-p {rollout_top_p}, <= {max_new_tokens} new tokens), labelled by "
        f"reward '{reward}'; value target '{value_target}', baseline '{baseline}'"
    )
    command = current_command()
    value.save_pretrained(
        out,
        base_model=lm.info.name,
        hidden_size=lm.info.hidden_size,
        command=command,
        data=data,
        metrics=metrics,
        extra={
            "reward": reward,
            "site": site,
            "step_size": step_size,
            "steps": control_steps,
            "train_steps": train_cfg.steps,
            "lr": lr,
            "weight_decay": weight_decay,
            "batch_size": batch_size,
            "value_target": value_target,
            "baseline": baseline,
            "bellman_loss_curve": [round(x, 5) for x in result.losses],
        },
        description="RE-Control value network V(h) (Kong et al. 2024): predicts the final reward from the "
        "edit-site hidden state; at test time each new state is moved by gradient ascent on V.",
    )
    # the static direction is ranked by the same targets as V (advantages with baseline=prompt)
    direction = static_direction(rollouts.states, rollouts.offsets, training_rewards(rollouts, reward, baseline))
    save_static_direction(
        Path(out) / STATIC_SUBDIR,
        direction,
        base_model=lm.info.name,
        site=site,
        reward=reward,
        scale=static_scale,
        data=data,
        command=command,
    )
    log.warning("saved value network to %s (val Bellman loss %.4f)", out, metrics["val_bellman_loss"])
    return Path(out)
