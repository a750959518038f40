"""``lmcontrol train investigator`` and ``lmcontrol redteam`` (typer only at import; the work is lazy)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from lmcontrol import LMControlError

log = logging.getLogger(__name__)


def _behaviors(spec: str, n: int | None):
    """A CSV / JSONL file, or ``advbench:train|val|test`` (the fixed hash split of AdvBench)."""
    from lmcontrol.redteam.behaviors import advbench_split, read_behaviors

    if n is not None and n < 1:
        raise LMControlError(f"--n must be >= 1, got {n}")
    if spec.startswith("advbench:"):
        return advbench_split(spec.split(":", 1)[1], limit=n)
    return read_behaviors(spec, limit=n)


def train_investigator(
    out: Annotated[
        Path, typer.Option(help="Artifact directory (its checkpoint/ keeps the state for --resume).")
    ] = Path("artifacts/investigator"),
    rounds: Annotated[int, typer.Option(help="Frank-Wolfe rounds of the objective (>= 1).")] = 3,
    steps: Annotated[int, typer.Option(help="Policy updates per round.")] = 30,
    beta1: Annotated[
        float, typer.Option(help="Entropy / FW repulsion weight beta1 (>= 0; 1 = exact posterior).")
    ] = 0.3,
    beta2: Annotated[float, typer.Option(help="Prior cross-entropy weight beta2 (>= 0; 1 = exact posterior).")] = 0.1,
    objective: Annotated[str, typer.Option(help="reinforce (leave-one-out baseline) or dpo.")] = "reinforce",
    behaviors: Annotated[
        str, typer.Option(help="Behaviours for the objective: FILE or advbench:train.")
    ] = "advbench:train",
    behaviors_per_step: Annotated[int, typer.Option(help="Behaviours per policy update.")] = 2,
    samples_per_behavior: Annotated[int, typer.Option(help="Prompts sampled per behaviour per update (>= 2).")] = 4,
    lr: Annotated[float, typer.Option(help="Learning rate of the rounds.")] = 5e-4,
    sft_pairs: Annotated[int, typer.Option(help="Forward (prompt, greedy reply) pairs for SFT.")] = 800,
    sft_epochs: Annotated[float, typer.Option(help="SFT epochs.")] = 1.0,
    sft_lr: Annotated[float, typer.Option(help="SFT learning rate.")] = 1e-3,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    model: Annotated[str | None, typer.Option(help="Target / base LM (default: embedded SmolLM2-135M).")] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.")] = False,
) -> None:
    """Train the investigator q(x | y): SFT on reversed pairs, then the objective in Frank-Wolfe rounds."""
    from lmcontrol.redteam.config import InvestigatorConfig, ObjectiveConfig, SFTDataConfig, SFTTrainConfig

    obj = ObjectiveConfig(
        beta1=beta1,
        beta2=beta2,
        rounds=rounds,
        steps=steps,
        objective=objective,
        behaviors_per_step=behaviors_per_step,
        samples_per_behavior=samples_per_behavior,
        lr=lr,
        seed=seed,
    )  # validates before anything heavy loads
    sft_data = SFTDataConfig(n_pairs=sft_pairs, seed=seed)
    sft = SFTTrainConfig(epochs=sft_epochs, lr=sft_lr, seed=seed)
    inv_cfg = InvestigatorConfig(lora_r=lora_r, lora_alpha=2 * lora_r)
    bs = _behaviors(behaviors, None)
    import torch

    from lmcontrol.models import load_lm
    from lmcontrol.redteam.train import TrainPlan
    from lmcontrol.redteam.train import train_investigator as run

    torch.set_num_threads(threads)
    target = load_lm(model)
    plan = TrainPlan(investigator=inv_cfg, sft_data=sft_data, sft=sft, objective=obj, behaviors=behaviors)
    run(target, plan, out, behaviors=bs, resume=resume)
    typer.echo(f"wrote {out}")


def redteam(
    behaviors: Annotated[str, typer.Option(help="CSV (AdvBench goal,target), JSONL, or advbench:test.")],
    out: Annotated[Path, typer.Option(help="Output directory: results.json, report.md, asr.png.")],
    investigator: Annotated[Path | None, typer.Option(help="Investigator artifact directory.")] = Path(
        "artifacts/investigator"
    ),
    control: Annotated[list[str] | None, typer.Option(help="Control(s) on the target (the audit), repeatable.")] = None,
    method: Annotated[
        str, typer.Option(help="investigator, sample (plain model asked), gcg (nanoGCG) or goal (the request itself).")
    ] = "investigator",
    components: Annotated[str | None, typer.Option(help="Investigator adapters to sample, e.g. round1 or sft.")] = None,
    samples: Annotated[int, typer.Option(help="Prompts sampled per behaviour (K).")] = 32,
    verify_top: Annotated[int, typer.Option(help="Best-scored prompts verified by the greedy reply.")] = 32,
    refine: Annotated[int, typer.Option(help="Refinement rounds around the best prompts.")] = 0,
    match_words: Annotated[int, typer.Option(help="Target words the reply must begin with.")] = 5,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of the proposals.")] = 1.0,
    n: Annotated[int | None, typer.Option(help="Attack only the first N behaviours.")] = None,
    gcg_seconds: Annotated[float, typer.Option(help="nanoGCG wall-time budget per behaviour.")] = 30.0,
    model: Annotated[str | None, typer.Option(help="Target LM (default: embedded SmolLM2-135M).")] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
) -> None:
    """Attack behaviours: sample prompts, score log p(y|x), verify by the greedy reply, cluster strategies."""
    from lmcontrol.redteam.config import AttackConfig

    cfg = AttackConfig(
        samples=samples,
        verify_top=verify_top,
        refine=refine,
        match_words=match_words,
        temperature=temperature,
        seed=seed,
    )
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
        config=cfg,
        gcg_seconds=gcg_seconds,
        model=model,
    )
    typer.echo("\n".join(report_table(res["aggregate"])))
    typer.echo(f"wrote {out}/results.json, report.md, asr.png")


def train_factory() -> object:
    return train_investigator


def redteam_factory() -> object:
    return redteam
