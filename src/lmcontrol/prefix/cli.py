"""``lmcontrol train prefix``, ``lmcontrol compress`` and the prefix section of ``lmcontrol demo``.

Light at import time (typer and the torch-free configs): the options come from the config dataclasses
(``PrefixConfig``, ``PrefixRun``, ``TrainConfig``, ``CompressConfig``), whose field docs are the ``--help`` text;
the work is imported when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmcontrol.cli.config_options import Model, Resume, check_resume, config_options
from lmcontrol.prefix.config import CompressConfig, PrefixConfig, PrefixRun
from lmcontrol.settings import ARTIFACTS_DIR
from lmcontrol.train_config import TrainConfig

_GEOMETRY = ("num_layers", "num_kv_heads", "head_dim", "hidden_size", "merged", "format_version")


@config_options("prefix", PrefixConfig, exclude=_GEOMETRY)
@config_options("run", PrefixRun, exclude=("eval_split", "max_new_tokens"))
@config_options(
    "train",
    TrainConfig,
    include=("steps", "lr", "checkpoint_every", "seed"),
    defaults={"steps": 150, "checkpoint_every": 25},
)
def train_prefix(
    out: Annotated[Path, typer.Option(help="Artifact directory (checkpoints go to OUT/checkpoint).")],
    prefix: PrefixConfig,
    run: PrefixRun,
    train: TrainConfig,
    model: Model = None,
    resume: Resume = False,
) -> None:
    """Prefix-tuning (Li & Liang 2021): learn per-layer key/value prefixes of a frozen LM."""
    from rich.console import Console

    from lmcontrol.prefix.train import run_train_command

    check_resume(out, resume)
    metrics = run_train_command(prefix, train, run, model=model, out=out, resume=resume)
    Console().print(f"saved {out}: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))


@config_options("cfg", CompressConfig, exclude=("format_version",), rename={"samples_per_input": "samples"})
def compress(
    prompt_file: Annotated[Path, typer.Option(help="Text file with the long prompt P.")],
    out: Annotated[Path, typer.Option(help="Artifact directory.")],
    cfg: CompressConfig,
    inputs: Annotated[Path | None, typer.Option(help="JSON with 'train' user inputs (default: beside P).")] = None,
    model: Model = None,
    resume: Resume = False,
) -> None:
    """Compress a long prompt into k soft key/value tokens (gisting, Mu et al. 2023)."""
    from rich.console import Console

    from lmcontrol.prefix.compress import run_compress_command

    check_resume(out, resume)
    metrics = run_compress_command(cfg, prompt_file=prompt_file, out=out, inputs=inputs, model=model, resume=resume)
    Console().print(f"saved {out}: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))


def train_factory() -> Any:
    return train_prefix


def compress_factory() -> Any:
    return compress


DEMO_MRS = [
    "name : The Eagle | Type : coffee shop | food : French | price : moderate | area : riverside | near : Burger King",
    "name : Blue Spice | Type : restaurant | food : Italian | customer rating : 5 out of 5 | family friendly : yes",
]
DEMO_QUESTIONS = ["What is the tallest mountain in the world?", "How do I keep my houseplants alive?"]
DEMO_COMPRESSED = "compressed-pirate"  # the demo shows one compressed prompt (this one, else the first committed)


def prefix_demo(lm: Any, console: Any, max_new_tokens: int) -> None:
    """E2E data-to-text with the committed prefix, and a compressed prompt, each beside the base model."""
    from rich.table import Table

    from lmcontrol.generation import GenerationConfig, generate
    from lmcontrol.prefix.compress import PROMPTS_DIR, load_prompt_spec
    from lmcontrol.prefix.control import single_prefix_control

    e2e = ARTIFACTS_DIR / "prefix-e2e"
    if (e2e / "config.json").is_file():
        cfg = GenerationConfig(max_new_tokens=max_new_tokens, chat=False)
        prompts = [m + "\n" for m in DEMO_MRS]
        base = generate(lm, prompts, cfg)
        tuned = generate(lm, prompts, cfg, [single_prefix_control(e2e, lm)])
        table = Table("E2E table", "base model", "+ 10-token prefix", title="prefix-tuning", show_lines=True)
        for i, m in enumerate(DEMO_MRS):
            table.add_row(m, base.texts[i].strip(), tuned.texts[i].strip())
        console.print(table)
    else:
        console.print(f"no E2E prefix at {e2e}")
    committed = sorted(ARTIFACTS_DIR.glob("compressed-*"), key=lambda d: d.name != DEMO_COMPRESSED)
    for comp in committed[:1]:
        from lmcontrol.artifacts import read_meta

        meta = read_meta(comp)
        spec = load_prompt_spec(PROMPTS_DIR / f"{meta.extra['prompt_name']}.txt")
        cfg = GenerationConfig(max_new_tokens=max_new_tokens)
        base = generate(lm, DEMO_QUESTIONS, cfg)
        full = generate(lm, DEMO_QUESTIONS, GenerationConfig(max_new_tokens=max_new_tokens, system=spec.text))
        soft = generate(lm, DEMO_QUESTIONS, cfg, [single_prefix_control(comp, lm)])
        m = meta.metrics
        rule = spec.rule["description"] if spec.rule else ""
        table = Table(
            "question",
            "no prompt",
            f"full prompt ({m['prompt_tokens']} tokens)",
            f"{m['soft_tokens']} soft tokens",
            title=f"compressed prompt '{spec.name}' ({m['compression_ratio']}x): {rule}",
            show_lines=True,
        )
        for i, q in enumerate(DEMO_QUESTIONS):
            table.add_row(q, base.texts[i], full.texts[i], soft.texts[i])
        console.print(table)
        console.print(
            f"time to first token: full prompt {full.first_token_seconds:.2f}s, soft {soft.first_token_seconds:.2f}s"
        )
