"""The ``train recontrol`` pipeline: roll out, label, fit V, save the value net and the static-RE direction.

Each stage resumes: rollout shards already on disk are kept, rows already labelled are not re-scored, and
``resume=True`` continues the value-network optimisation from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from lmcontrol import LMControlError
from lmcontrol.recontrol.config import ReControlConfig, RolloutConfig, ValueNetworkConfig, ValueTrainConfig
from lmcontrol.train_config import TrainConfig

log = logging.getLogger(__name__)


def run_training(
    *,
    rollout: RolloutConfig,
    value: ValueNetworkConfig,
    value_train: ValueTrainConfig,
    control: ReControlConfig,
    train: TrainConfig,
    reward: str,
    out: Path,
    work_dir: Path,
    model: str | None,
    n_prompts: int,
    batch_size: int,
    static_scale: float = 0.5,
    threads: int = 1,
    resume: bool = False,
) -> Path:
    """Run every stage and return the artifact path (arguments as in ``lmcontrol train recontrol --help``).

    ``value.hidden_size`` is replaced by the model's; ``control`` holds the step size / steps recommended on the
    card; ``batch_size`` is the value network's minibatch of states.
    """
    from lmcontrol.artifacts import current_command
    from lmcontrol.eval.reward import load_reward
    from lmcontrol.models import load_lm
    from lmcontrol.recontrol.baselines import STATIC_SUBDIR, save_static_direction, static_direction
    from lmcontrol.recontrol.rollouts import collect_rollouts, hh_prompt_split, label_rollouts, load_rollouts
    from lmcontrol.recontrol.train import train_value_network, training_rewards

    torch.set_num_threads(max(1, threads))
    site = rollout.site
    prompts = rollout.prompts
    reward_fn = load_reward(reward)  # unknown names fail here, before any rollout
    lm = load_lm(model)
    rollout_dir = Path(work_dir) / "rollouts"
    train_prompts = hh_prompt_split(prompts, "train")[:n_prompts]
    collect_rollouts(lm, train_prompts, rollout_dir, rollout)
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

    value_cfg = dataclasses.replace(value, hidden_size=lm.info.hidden_size)
    value_net, metrics, result = train_value_network(
        rollouts,
        reward,
        value_cfg,
        train,
        Path(work_dir) / "value",
        value_train=value_train,
        batch_size=batch_size,
        resume=resume,
    )
    data = (
        f"{len(rollouts.rows)} rollouts ({rollout.samples} per prompt) of {lm.info.name} on "
        f"{len(train_prompts)} prompts of {prompts} ('train' part of hh_prompt_split; chat template; "
        f"T={rollout.temperature}, top-p {rollout.top_p}, <= {rollout.max_new_tokens} new tokens), labelled by "
        f"reward '{reward}'; value target '{value_train.target}', baseline '{value_train.baseline}'"
    )
    command = current_command()
    value_net.save_pretrained(
        out,
        base_model=lm.info.name,
        hidden_size=lm.info.hidden_size,
        command=command,
        data=data,
        metrics=metrics,
        extra={
            "reward": reward,
            "site": site,
            "step_size": control.step_size,
            "steps": control.steps,
            "train_steps": train.steps,
            "lr": train.lr,
            "weight_decay": train.weight_decay,
            "batch_size": batch_size,
            "value_target": value_train.target,
            "baseline": value_train.baseline,
            "bellman_loss_curve": [round(x, 5) for x in result.losses],
        },
        description="RE-Control value network V(h) (Kong et al. 2024): predicts the final reward from the "
        "edit-site hidden state; at test time each new state is moved by gradient ascent on V.",
    )
    # the static direction is ranked by the same targets as V (advantages with baseline=prompt)
    targets = training_rewards(rollouts, reward, value_train.baseline)
    direction = static_direction(rollouts.states, rollouts.offsets, targets)
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
