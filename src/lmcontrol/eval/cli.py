"""``lmcontrol train reward`` and ``lmcontrol train probe``: options generated from ``RewardTrainConfig`` and
``ProbeTrainConfig`` (torch-free at import; the work is imported when a command runs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from lmcontrol.cli.config_options import config_options
from lmcontrol.eval.config import ProbeTrainConfig, RewardTrainConfig


@config_options("cfg", RewardTrainConfig)
def reward(
    cfg: RewardTrainConfig,
    out: Annotated[Path, typer.Option(help="Artifact directory.")] = Path("artifacts/hh-reward"),
) -> None:
    """Train the Bradley-Terry reward model (frozen sentence encoder + MLP heads) on preference pairs."""
    import torch

    from lmcontrol.eval.reward_train import train_reward

    torch.set_num_threads(1)  # the CPU is shared; encoding dominates either way
    model, metrics = train_reward(cfg)
    model.save_pretrained(
        out,
        data=f"{cfg.data}: {metrics['pairs_train']} train / {metrics['pairs_val']} validation / "
        f"{metrics['pairs_heldout']} held-out pairs (seeded random split)",
        metrics=metrics,
        extra={"train_config": dataclasses.asdict(cfg)},
        description="Bradley-Terry reward model: frozen sentence encoder + MLP heads over "
        "[e_prompt, e_response, e_prompt*e_response, len, len*e_prompt]. Use with "
        "`lmcontrol.eval.reward.load_reward('hh')`.",
    )
    typer.echo(f"held-out pairwise accuracy {metrics['heldout_pairwise_accuracy']:.4f}; saved {out}")


@config_options("cfg", ProbeTrainConfig, exclude=("cs",))
def probe(
    cfg: ProbeTrainConfig,
    out: Annotated[Path, typer.Option(help="Artifact directory.")],
) -> None:
    """Train a logistic-regression probe on sentence embeddings (evaluation / DGLM guidance)."""
    import torch

    from lmcontrol.eval.probes import train_probe

    torch.set_num_threads(1)  # the CPU is shared; encoding dominates either way
    model, metrics = train_probe(cfg)
    model.save_pretrained(
        out,
        data=f"{cfg.data}: {metrics['train_rows']} training rows; evaluated on {metrics['eval_split']} "
        f"({metrics['eval_rows']} rows)",
        metrics=metrics,
        extra={"train_config": dataclasses.asdict(cfg)},
        description="Logistic-regression probe on sentence embeddings; labels: " + ", ".join(model.config.labels),
    )
    typer.echo(f"{metrics['eval_split']} accuracy {metrics['eval_accuracy']:.4f}; saved {out}")


def reward_factory() -> object:
    return reward


def probe_factory() -> object:
    return probe
