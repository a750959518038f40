"""``lmcontrol train diffusion-lm | diffusion-lm-classifier | diffusion-lm-span-classifier``, the sampling command
``lmcontrol diffusion-lm`` and the demo section (light at import: typer only; options come from the config
dataclasses, ``lmcontrol.cli.config_options``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmcontrol.cli.config_options import Resume, check_resume, config_options
from lmcontrol.diffusion_lm.config import (
    DEFAULT_CLASSIFIER_DIR,
    DEFAULT_MODEL_DIR,
    DEFAULT_SPAN_CLASSIFIER_DIR,
    ClassifierTrainSettings,
    DiffusionLMConfig,
    DiffusionTrainSettings,
    SampleSettings,
)

Threads = Annotated[int, typer.Option(help="torch threads (0 = torch default).")]
ModelDir = Annotated[Path, typer.Option(help="The Diffusion-LM artifact whose latents to classify.")]
WorkDir = Annotated[Path, typer.Option(help="Checkpoints go to WORK_DIR/checkpoint.")]
Out = Annotated[Path, typer.Option(help="Artifact directory to write.")]
_CLASSIFIER = ("steps", "batch_size", "lr", "width", "layers", "seed")


def _setup(threads: int) -> None:
    import logging

    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    logging.getLogger("lmcontrol").setLevel(logging.INFO)


def _echo(out: Path, metrics: dict[str, Any]) -> None:
    typer.echo(f"wrote {out}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in metrics.items()))  # fmt: skip


@config_options("config", DiffusionLMConfig, include=("embed_dim", "width", "layers", "heads", "diffusion_steps",
                                                      "seq_len", "self_condition"))  # fmt: skip
@config_options("settings", DiffusionTrainSettings, exclude=("log_every",))
def train_diffusion_lm_cmd(
    config: DiffusionLMConfig,
    settings: DiffusionTrainSettings,
    out: Out = DEFAULT_MODEL_DIR,
    work_dir: WorkDir = Path("runs/diffusion-lm"),
    threads: Threads = 1,
    figure: Annotated[Path | None, typer.Option(help="Loss-curve PNG to write.")] = Path(
        "docs/img/diffusion_lm_loss.png"
    ),
    resume: Resume = False,
) -> None:
    """Train a Diffusion-LM denoiser on E2E (Li et al. 2022)."""
    check_resume(work_dir, resume)
    _setup(threads)
    from lmcontrol.diffusion_lm.train import train_diffusion_lm

    _echo(out, train_diffusion_lm(config, settings, out, work_dir, resume=resume, figure=figure))


@config_options("settings", ClassifierTrainSettings, include=_CLASSIFIER)
def train_classifier_cmd(
    settings: ClassifierTrainSettings,
    model: ModelDir = DEFAULT_MODEL_DIR,
    out: Out = DEFAULT_CLASSIFIER_DIR,
    work_dir: WorkDir = Path("runs/diffusion-lm-classifier"),
    threads: Threads = 1,
    resume: Resume = False,
) -> None:
    """Train the noised-latent attribute + POS classifier for Diffusion-LM control."""
    check_resume(work_dir, resume)
    _setup(threads)
    from lmcontrol.diffusion_lm.classifiers import train_classifier

    _echo(out, train_classifier(model, settings, out, work_dir, resume=resume))


@config_options("settings", ClassifierTrainSettings, include=(*_CLASSIFIER, "tag_limit"),
                rename={"tag_limit": "parse_limit"})  # fmt: skip
def train_span_classifier_cmd(
    settings: ClassifierTrainSettings,
    model: ModelDir = DEFAULT_MODEL_DIR,
    out: Out = DEFAULT_SPAN_CLASSIFIER_DIR,
    work_dir: WorkDir = Path("runs/diffusion-lm-span-classifier"),
    threads: Threads = 1,
    resume: Resume = False,
) -> None:
    """Train the noised-latent syntax-span classifier (constituent = spaCy subtree span)."""
    check_resume(work_dir, resume)
    _setup(threads)
    from lmcontrol.diffusion_lm.spans import train_span_classifier

    _echo(out, train_span_classifier(model, settings, out, work_dir, resume=resume))


@config_options("settings", SampleSettings, include=("steps", "sampler", "step_size", "fluency", "mbr", "noise_scale"))
def sample_cmd(
    settings: SampleSettings,
    n: Annotated[int, typer.Option(help="Sentences to sample.")] = 8,
    model: Annotated[Path, typer.Option(help="Diffusion-LM artifact.")] = DEFAULT_MODEL_DIR,
    classifier: Annotated[Path, typer.Option(help="Latent classifier artifact.")] = DEFAULT_CLASSIFIER_DIR,
    attribute: Annotated[str | None, typer.Option(help="Semantic content 'field=value', e.g. food=Italian.")] = None,
    pos: Annotated[str | None, typer.Option(help="Space-separated UPOS tags, e.g. 'PROPN AUX DET NOUN PUNCT'.")] = None,
    length: Annotated[int | None, typer.Option(help="Number of words.")] = None,
    span: Annotated[
        str | None, typer.Option(help="Syntax span 'i,j': words i..j (0-based, inclusive) form a constituent.")
    ] = None,
    span_classifier: Annotated[
        Path, typer.Option(help="Syntax-span classifier artifact.")
    ] = DEFAULT_SPAN_CLASSIFIER_DIR,
    left: Annotated[str | None, typer.Option(help="Infilling: words before the gap.")] = None,
    right: Annotated[str | None, typer.Option(help="Infilling: words after the gap.")] = None,
    middle: Annotated[int, typer.Option(help="Infilling: words to fill.")] = 6,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    threads: Threads = 0,
) -> None:
    """Sample E2E sentences from Diffusion-LM, optionally controlled (attribute/POS/span/length/infilling)."""
    _setup(threads)
    from lmcontrol import LMControlError
    from lmcontrol.diffusion_lm.pipeline import ControlTarget, DiffusionLMPipeline
    from lmcontrol.diffusion_lm.spans import parse_span_text

    field_value = None
    if attribute is not None:
        if "=" not in attribute:
            raise LMControlError(f"--attribute must be field=value, got '{attribute}'")
        field_value = tuple(part.strip() for part in attribute.split("=", 1))
    span_ij = parse_span_text(span) if span is not None else None
    needs_classifier = attribute is not None or pos is not None
    pipe = DiffusionLMPipeline.from_pretrained(
        model, classifier if needs_classifier else None, span_classifier if span_ij is not None else None
    )
    target = ControlTarget(
        attribute=field_value,
        pos=tuple(pos.split()) if pos else None,
        length=length,
        span=span_ij,
        left=left,
        right=right,
        middle=middle,
    )
    for text in pipe(n, target=target, settings=settings, seed=seed):
        typer.echo(text)


def demo(lm: Any, console: Any, max_new_tokens: int) -> None:
    """Unconstrained, attribute-controlled, length-controlled and infilled samples side by side."""
    from rich.table import Table

    from lmcontrol.diffusion_lm.pipeline import ControlTarget, DiffusionLMPipeline, SampleSettings

    span_dir = DEFAULT_SPAN_CLASSIFIER_DIR if (DEFAULT_SPAN_CLASSIFIER_DIR / "config.json").is_file() else None
    pipe = DiffusionLMPipeline.from_pretrained(DEFAULT_MODEL_DIR, DEFAULT_CLASSIFIER_DIR, span_dir)
    settings = SampleSettings(steps=100)
    table = Table("control", "samples (E2E word vocabulary; 100 diffusion steps)", show_lines=True)
    cases = [
        ("none", ControlTarget()),
        ("food=Italian", ControlTarget(attribute=("food", "Italian"))),
        ("length = 12 words", ControlTarget(length=12)),
        *([("words 3..5 form a constituent", ControlTarget(span=(3, 5)))] if span_dir else []),
        (
            "infill: 'The Vaults is' ___ 'in the city centre .'",
            ControlTarget(left="The Vaults is", right="in the city centre .", middle=6),
        ),
    ]
    for name, target in cases:
        texts = pipe(2, target=target, settings=settings, seed=0)
        table.add_row(name, "\n".join(texts))
    console.print(table)
