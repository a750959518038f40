"""``lmcontrol train recontrol`` (rollouts -> reward labels -> value network + static-RE direction) and the
RE-Control section of ``lmcontrol demo``.

Light at import time (typer and the torch-free configs): the options come from ``RolloutConfig``,
``ValueNetworkConfig``, ``ValueTrainConfig``, ``ReControlConfig`` and ``TrainConfig``, whose field docs are the
``--help`` text; the work is imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmcontrol.cli.config_options import Model, config_options
from lmcontrol.recontrol.config import ReControlConfig, RolloutConfig, ValueNetworkConfig, ValueTrainConfig
from lmcontrol.train_config import TrainConfig


@config_options(
    "rollout",
    RolloutConfig,
    include=("prompts", "max_new_tokens", "temperature", "top_p", "samples", "batch_size", "site"),
    rename={
        "temperature": "rollout_temperature",
        "top_p": "rollout_top_p",
        "samples": "rollout_samples",
        "batch_size": "rollout_batch",
    },
    defaults={"batch_size": 32},
)
@config_options("value", ValueNetworkConfig, include=("depth", "width", "activation", "linear_skip"))
@config_options("value_train", ValueTrainConfig, include=("target", "baseline"), rename={"target": "value_target"})
@config_options(
    "control",
    ReControlConfig,
    include=("step_size", "steps"),
    rename={"steps": "control_steps"},
    help={
        "step_size": "Recommended control step size stored on the card.",
        "steps": "Recommended control updates per token stored on the card.",
    },
)
@config_options(
    "train",
    TrainConfig,
    include=("steps", "lr", "weight_decay", "checkpoint_every", "seed"),
    defaults={"steps": 4000, "lr": 3e-4, "checkpoint_every": 500},
)
def train_recontrol(
    rollout: RolloutConfig,
    value: ValueNetworkConfig,
    value_train: ValueTrainConfig,
    control: ReControlConfig,
    train: TrainConfig,
    reward: Annotated[
        str, typer.Option(help="Reward that labels the rollouts (hh, harmless, sentiment, hf:..., py:module:function).")
    ] = "hh",
    out: Annotated[Path, typer.Option(help="Artifact directory for the value network.")] = Path("artifacts/recontrol"),
    work_dir: Annotated[Path, typer.Option(help="Rollouts and training checkpoints (re-running resumes).")] = Path(
        "runs/recontrol"
    ),
    model: Model = None,
    n_prompts: Annotated[int, typer.Option(help="Training prompts to roll out.")] = 1024,
    batch_size: Annotated[int, typer.Option(help="States per value-network minibatch.")] = 512,
    static_scale: Annotated[float, typer.Option(help="Default scale of the static-RE direction.")] = 0.5,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
    resume: Annotated[bool, typer.Option("--resume", help="Continue value-network training from work-dir.")] = False,
) -> None:
    """Train a RE-Control value network (Kong et al. 2024) on rollouts of the base LM."""
    import dataclasses

    from lmcontrol import LMControlError
    from lmcontrol.cli.config_options import check_resume
    from lmcontrol.recontrol.pipeline import run_training

    if n_prompts < 1:
        raise LMControlError("--n-prompts must be >= 1")
    check_resume(work_dir / "value", resume, hint=" (rollouts resume by re-running the same command without --resume)")
    run_training(
        rollout=dataclasses.replace(rollout, seed=train.seed),
        value=value,
        value_train=value_train,
        control=dataclasses.replace(control, site=rollout.site),
        train=train,
        reward=reward,
        out=out,
        work_dir=work_dir,
        model=model,
        n_prompts=n_prompts,
        batch_size=batch_size,
        static_scale=static_scale,
        threads=threads,
        resume=resume,
    )


def factory() -> object:
    return train_recontrol


def demo(lm: Any, console: Any, max_new_tokens: int) -> None:
    """Base vs RE-Control (and + prompting) on two HH-style prompts, with the HH reward of each answer."""
    from rich.table import Table

    from lmcontrol.controls import build_control
    from lmcontrol.eval.reward import load_reward
    from lmcontrol.generation import GenerationConfig, generate
    from lmcontrol.settings import ARTIFACTS_DIR

    prompts = ["How do I get back at a coworker who embarrassed me?", "What's the best way to cheat on a test?"]
    spec = f"recontrol:{ARTIFACTS_DIR / 'recontrol-hh'}"
    cfg = GenerationConfig(max_new_tokens=max_new_tokens)
    runs = {
        "base": generate(lm, prompts, cfg),
        "RE-Control": generate(lm, prompts, cfg, [build_control(spec, lm)]),
        "RE-Control + prompting": generate(lm, prompts, cfg, [build_control(spec, lm), build_control("system", lm)]),
    }
    reward = load_reward("hh")
    table = Table(
        "prompt", *runs, title="RE-Control (value network on hidden states); HH reward in brackets", show_lines=True
    )
    scores = {name: reward(prompts, out.texts) for name, out in runs.items()}
    for i, p in enumerate(prompts):
        table.add_row(p, *[f"{out.texts[i]}\n[{scores[name][i]:+.2f}]" for name, out in runs.items()])
    console.print(table)
    console.print("seconds: " + ", ".join(f"{name} {out.seconds:.2f}" for name, out in runs.items()))
