"""Registers the evaluation trainers: ``lmcontrol train reward`` and ``lmcontrol train probe``.

Light on purpose (imported by ``registry.discover()``): the command bodies import torch & co. when run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmcontrol import registry


def _reward_command():
    def reward(
        data: Annotated[
            str, typer.Option(help="hh-rlhf, hh-rlhf:SUBSET, or a file with prompt/chosen/rejected.")
        ] = "hh-rlhf",
        out: Annotated[Path, typer.Option(help="Artifact directory.")] = Path("artifacts/hh-reward"),
        heldout: Annotated[
            float, typer.Option(help="Share of pairs held out for the reported accuracy.")
        ] = 0.2,
        epochs: Annotated[
            int, typer.Option(help="Epochs per head (the best one on a validation part is kept).")
        ] = 40,
        heads: Annotated[int, typer.Option(help="Ensemble size.")] = 4,
        hidden: Annotated[int, typer.Option(help="Hidden units per head.")] = 64,
        seed: Annotated[int, typer.Option(help="Seed for the split and the heads.")] = 0,
        encoder: Annotated[
            str | None, typer.Option(help="Sentence encoder (default all-MiniLM-L6-v2).")
        ] = None,
        limit: Annotated[int | None, typer.Option(help="Use only the first N pairs.")] = None,
    ) -> None:
        """Train the Bradley-Terry reward model (frozen sentence encoder + MLP heads) on preference pairs."""
        import torch

        from lmcontrol.eval.reward_train import RewardTrainConfig, train_reward

        torch.set_num_threads(1)  # the CPU is shared; encoding dominates either way
        cfg = RewardTrainConfig(
            data=data,
            heldout=heldout,
            epochs=epochs,
            heads=heads,
            hidden=hidden,
            seed=seed,
            encoder=encoder,
            limit=limit,
        )
        model, metrics = train_reward(cfg)
        model.save_pretrained(
            out,
            data=f"{data}: {metrics['pairs_train']} train / {metrics['pairs_val']} validation / "
            f"{metrics['pairs_heldout']} held-out pairs (seeded random split)",
            metrics=metrics,
            extra={"train_config": _asdict(cfg)},
            description="Bradley-Terry reward model: frozen sentence encoder + MLP heads over "
            "[e_prompt, e_response, e_prompt*e_response, len, len*e_prompt]. Use with "
            "`lmcontrol.eval.reward.load_reward('hh')`.",
        )
        typer.echo(f"held-out pairwise accuracy {metrics['heldout_pairwise_accuracy']:.4f}; saved {out}")

    return reward


def _probe_command():
    def probe(
        data: Annotated[str, typer.Option(help="sst2, ag_news, jigsaw or a .jsonl/.csv file.")],
        out: Annotated[Path, typer.Option(help="Artifact directory.")],
        text_column: Annotated[str, typer.Option(help="Field with the text.")] = "text",
        label_column: Annotated[str, typer.Option(help="Field with the class label.")] = "label",
        limit: Annotated[int | None, typer.Option(help="Random subsample of the training rows.")] = None,
        eval_split: Annotated[
            str | None, typer.Option(help="Evaluation split (default: dev/test, or a holdout).")
        ] = None,
        seed: Annotated[int, typer.Option(help="Seed for subsampling and the holdout.")] = 0,
        encoder: Annotated[
            str | None, typer.Option(help="Sentence encoder (default all-MiniLM-L6-v2).")
        ] = None,
    ) -> None:
        """Train a logistic-regression probe on sentence embeddings (evaluation / DGLM guidance)."""
        import torch

        from lmcontrol.eval.probes import ProbeTrainConfig, train_probe

        torch.set_num_threads(1)  # the CPU is shared; encoding dominates either way
        cfg = ProbeTrainConfig(
            data=data,
            text_column=text_column,
            label_column=label_column,
            limit=limit,
            eval_split=eval_split,
            seed=seed,
            encoder=encoder,
        )
        model, metrics = train_probe(cfg)
        model.save_pretrained(
            out,
            data=f"{data}: {metrics['train_rows']} training rows; evaluated on {metrics['eval_split']} "
            f"({metrics['eval_rows']} rows)",
            metrics=metrics,
            extra={"train_config": _asdict(cfg)},
            description="Logistic-regression probe on sentence embeddings; labels: "
            + ", ".join(model.config.labels),
        )
        typer.echo(f"{metrics['eval_split']} accuracy {metrics['eval_accuracy']:.4f}; saved {out}")

    return probe


def _asdict(cfg: object) -> dict:
    import dataclasses

    return dataclasses.asdict(cfg)  # type: ignore[call-overload]


import lmcontrol.eval.suite  # noqa: E402,F401 - registers the built-in metrics (pure Python, light)

_R = "lmcontrol.eval.reward"
registry.register_reward("hh", registry.lazy(_R, "hh_reward"), "Bradley-Terry HH-RLHF reward (artifacts/hh-reward)")
registry.register_reward("harmless", registry.lazy(_R, "harmless_reward"), "1 - toxicity of the response (Jigsaw)")
registry.register_reward("sentiment", registry.lazy(_R, "sentiment_reward"), "P(positive) under the SST-2 probe")
registry.register_trainer("reward", _reward_command, "Bradley-Terry reward model on HH-RLHF pairs.")
registry.register_trainer("probe", _probe_command, "Logistic-regression probe on sentence embeddings.")
