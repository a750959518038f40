"""``lmcontrol train recontrol``: rollouts -> reward labels -> value network (+ static-RE direction).

Light at import time (typer only): the heavy work is imported inside the command.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from lmcontrol import LMControlError

log = logging.getLogger(__name__)


def train_recontrol(
    prompts: Annotated[
        str,
        typer.Option(
            help="HH-RLHF data set whose first human turns are the prompts "
            "(the 'train' part of lmcontrol.recontrol.rollouts.hh_prompt_split)."
        ),
    ] = "hh-rlhf:harmless-base",
    reward: Annotated[
        str,
        typer.Option(
            help="Reward that labels the rollouts (hh, harmless, sentiment, hf:..., py:module:function)."
        ),
    ] = "hh",
    out: Annotated[Path, typer.Option(help="Artifact directory for the value network.")] = Path(
        "artifacts/recontrol"
    ),
    work_dir: Annotated[
        Path, typer.Option(help="Rollouts and training checkpoints (re-running resumes).")
    ] = Path("runs/recontrol"),
    model: Annotated[str | None, typer.Option(help="Base LM (default: embedded SmolLM2-135M).")] = None,
    n_prompts: Annotated[int, typer.Option(help="Training prompts to roll out.")] = 1024,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per rollout.")] = 48,
    rollout_temperature: Annotated[float, typer.Option(help="Sampling temperature of the rollouts.")] = 0.7,
    rollout_batch: Annotated[int, typer.Option(help="Rollout batch size.")] = 32,
    rollout_samples: Annotated[int, typer.Option(help="Sampled responses per prompt.")] = 1,
    rollout_top_p: Annotated[float, typer.Option(help="Nucleus (top-p) of the rollouts.")] = 0.95,
    value_target: Annotated[
        str, typer.Option(help="'bellman' (TD(0), paper eq. 8) or 'mc' (the final reward for every state).")
    ] = "bellman",
    baseline: Annotated[
        str,
        typer.Option(help="'prompt': regress on reward minus the prompt's mean rollout reward; 'none': raw."),
    ] = "none",
    site: Annotated[
        str, typer.Option(help="Edit site: 'final' (after the final norm) or 'layer:L'.")
    ] = "final",
    depth: Annotated[int, typer.Option(help="Value-network linear layers (2 or 3).")] = 3,
    width: Annotated[int, typer.Option(help="Value-network width.")] = 576,
    activation: Annotated[str, typer.Option(help="relu, gelu, silu or tanh.")] = "relu",
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 4000,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 3e-4,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="States per minibatch.")] = 512,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint interval (steps).")] = 500,
    step_size: Annotated[float, typer.Option(help="Recommended control step size stored on the card.")] = 0.5,
    control_steps: Annotated[
        int, typer.Option(help="Recommended control updates per token on the card.")
    ] = 5,
    static_scale: Annotated[float, typer.Option(help="Default scale of the static-RE direction.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue value-network training from work-dir.")
    ] = False,
) -> None:
    """Train a RE-Control value network (Kong et al. 2024) on rollouts of the base LM."""
    from lmcontrol.recontrol.pipeline import run_training

    if n_prompts < 1 or max_new_tokens < 1:
        raise LMControlError("--n-prompts and --max-new-tokens must be >= 1")
    run_training(
        prompts=prompts,
        reward=reward,
        out=out,
        work_dir=work_dir,
        model=model,
        n_prompts=n_prompts,
        max_new_tokens=max_new_tokens,
        rollout_temperature=rollout_temperature,
        rollout_batch=rollout_batch,
        rollout_samples=rollout_samples,
        rollout_top_p=rollout_top_p,
        value_target=value_target,
        baseline=baseline,
        site=site,
        depth=depth,
        width=width,
        activation=activation,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        checkpoint_every=checkpoint_every,
        step_size=step_size,
        control_steps=control_steps,
        weight_decay=weight_decay,
        static_scale=static_scale,
        seed=seed,
        threads=threads,
        resume=resume,
    )


def factory() -> object:
    return train_recontrol
