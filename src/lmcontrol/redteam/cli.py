"""``lmcontrol train investigator`` and ``lmcontrol redteam`` (typer only at import; the work is lazy)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from lmcontrol import LMControlError
from lmcontrol.cli.config_options import config_options
from lmcontrol.redteam.config import AttackConfig, InvestigatorConfig, ObjectiveConfig, SFTDataConfig, SFTTrainConfig

log = logging.getLogger(__name__)

TargetModel = Annotated[
    str | None, typer.Option("--model", help="Target LM, also the investigator's base (default: SmolLM2-135M).")
]


def _behaviors(spec: str, n: int | None):
    """A CSV / JSONL file, or ``advbench:train|val|test`` (the fixed hash split of AdvBench)."""
    from lmcontrol.redteam.behaviors import advbench_split, read_behaviors

    if n is not None and n < 1:
        raise LMControlError(f"--n must be >= 1, got {n}")
    if spec.startswith("advbench:"):
        return advbench_split(spec.split(":", 1)[1], limit=n)
    return read_behaviors(spec, limit=n)


@config_options(
    "objective_config",
    ObjectiveConfig,
    include=("rounds", "steps", "beta1", "beta2", "objective", "behaviors_per_step", "samples_per_behavior", "lr",
             "temperature", "verify_tokens", "match_words", "keep_per_behavior", "max_overlap", "seed"),
)  # fmt: skip
@config_options("sft", SFTTrainConfig, include=("epochs", "lr", "batch_size"),
                rename={"epochs": "sft_epochs", "lr": "sft_lr", "batch_size": "sft_batch_size"})  # fmt: skip
@config_options("sft_data", SFTDataConfig, include=("n_pairs",), rename={"n_pairs": "sft_pairs"})
@config_options("investigator", InvestigatorConfig, include=("lora_r",))
def train_investigator(
    objective_config: ObjectiveConfig,
    sft: SFTTrainConfig,
    sft_data: SFTDataConfig,
    investigator: InvestigatorConfig,
    out: Annotated[
        Path, typer.Option(help="Artifact directory (its checkpoint/ keeps the state for --resume).")
    ] = Path("artifacts/investigator"),
    behaviors: Annotated[
        str, typer.Option(help="Behaviours for the objective: FILE or advbench:train.")
    ] = "advbench:train",
    model: TargetModel = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.")] = False,
    sft_from: Annotated[
        Path | None,
        typer.Option(help="Reuse the SFT reverse model of this investigator artifact (skips pairs and SFT)."),
    ] = None,
) -> None:
    """Train the investigator q(x | y): SFT on reversed pairs, then the objective in Frank-Wolfe rounds."""
    import dataclasses

    seed = objective_config.seed  # one --seed for every phase
    sft_data = dataclasses.replace(sft_data, seed=seed)
    sft = dataclasses.replace(sft, seed=seed)
    inv_cfg = dataclasses.replace(investigator, lora_alpha=2 * investigator.lora_r)
    bs = _behaviors(behaviors, None)
    if sft_from is not None and not (sft_from / "config.json").is_file():
        raise LMControlError(f"--sft-from {sft_from}: not an artifact directory (no config.json)")
    import torch

    from lmcontrol.models import load_lm
    from lmcontrol.redteam.train import TrainPlan
    from lmcontrol.redteam.train import train_investigator as run

    torch.set_num_threads(threads)
    target = load_lm(model)
    plan = TrainPlan(investigator=inv_cfg, sft_data=sft_data, sft=sft, objective=objective_config, behaviors=behaviors)
    run(target, plan, out, behaviors=bs, resume=resume, sft_from=sft_from)
    typer.echo(f"wrote {out}")


@config_options("config", AttackConfig, include=("samples", "verify_top", "refine", "draws", "match_words",
                                                "temperature", "top_p", "max_new_tokens", "seed"))  # fmt: skip
def redteam(
    config: AttackConfig,
    behaviors: Annotated[str, typer.Option(help="CSV (AdvBench goal,target), JSONL, or advbench:test.")],
    out: Annotated[Path, typer.Option(help="Output directory: results.json, report.md, asr.png.")],
    investigator: Annotated[Path | None, typer.Option(help="Investigator artifact directory.")] = Path(
        "artifacts/investigator"
    ),
    control: Annotated[list[str] | None, typer.Option(help="Control(s) on the target (the audit), repeatable.")] = None,
    method: Annotated[
        str,
        typer.Option(
            help="investigator, sample (plain model asked), gcg (nanoGCG), goal (the request itself) or template "
            "(the fixed request templates the SFT data was built from)."
        ),
    ] = "investigator",
    components: Annotated[str | None, typer.Option(help="Investigator adapters to sample, e.g. round1 or sft.")] = None,
    n: Annotated[int | None, typer.Option(help="Attack only the first N behaviours.")] = None,
    gcg_seconds: Annotated[float, typer.Option(help="nanoGCG wall-time budget per behaviour.")] = 30.0,
    model: TargetModel = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
) -> None:
    """Attack behaviours: sample prompts, score log p(y|x), verify by the greedy reply, cluster strategies."""
    bs = _behaviors(behaviors, n)
    import torch

    from lmcontrol.redteam.pipeline import run_redteam
    from lmcontrol.redteam.report import report_table

    torch.set_num_threads(threads)
    res = run_redteam(
        bs,
        investigator=investigator,
        out=out,
        method=method,
        controls=control or (),
        components=components,
        config=config,
        gcg_seconds=gcg_seconds,
        model=model,
    )
    typer.echo("\n".join(report_table(res["aggregate"])))
    typer.echo(f"wrote {out}/results.json, report.md, asr.png")


def train_factory() -> object:
    return train_investigator


def redteam_factory() -> object:
    return redteam
