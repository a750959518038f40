"""Registers the Diffusion-LM trainers, the sampling command, the FUDGE control and the demo (light: no heavy
imports at module level)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmcontrol.diffusion_lm.config import DEFAULT_CLASSIFIER_DIR, DEFAULT_MODEL_DIR, DEFAULT_SPAN_CLASSIFIER_DIR
from lmcontrol.registry import (
    METRICS,
    lazy,
    register_command,
    register_control,
    register_demo,
    register_suite,
    register_trainer,
)


def _setup(threads: int) -> None:
    import logging

    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    logging.getLogger("lmcontrol").setLevel(logging.INFO)


def _diffusion_lm_trainer():
    def train_diffusion_lm(
        out: Annotated[Path, typer.Option(help="Artifact directory to write.")] = DEFAULT_MODEL_DIR,
        work_dir: Annotated[Path, typer.Option(help="Checkpoints go to WORK_DIR/checkpoint.")] = Path(
            "runs/diffusion-lm"
        ),
        steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 12000,
        batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 32,
        lr: Annotated[float, typer.Option(help="Peak AdamW learning rate (cosine decay).")] = 1e-3,
        warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 500,
        embed_dim: Annotated[int, typer.Option(help="Word-vector size d (paper: 16).")] = 16,
        width: Annotated[int, typer.Option(help="Transformer width.")] = 128,
        layers: Annotated[int, typer.Option(help="Transformer layers.")] = 4,
        heads: Annotated[int, typer.Option(help="Attention heads.")] = 4,
        diffusion_steps: Annotated[int, typer.Option(help="T (paper: 2000).")] = 2000,
        seq_len: Annotated[int, typer.Option(help="Tokens per sequence.")] = 64,
        min_count: Annotated[int, typer.Option(help="Vocabulary minimum word count.")] = 10,
        seed: Annotated[int, typer.Option(help="Seed.")] = 0,
        checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 500,
        threads: Annotated[int, typer.Option(help="torch threads (0 = torch default).")] = 1,
        figure: Annotated[Path | None, typer.Option(help="Loss-curve PNG to write.")] = Path(
            "docs/img/diffusion_lm_loss.png"
        ),
        resume: Annotated[bool, typer.Option("--resume", help="Continue from WORK_DIR/checkpoint.")] = False,
    ) -> None:
        """Train a Diffusion-LM denoiser on E2E (Li et al. 2022)."""
        _setup(threads)
        from lmcontrol.diffusion_lm.config import DiffusionLMConfig
        from lmcontrol.diffusion_lm.train import DiffusionTrainSettings, train_diffusion_lm

        config = DiffusionLMConfig(
            seq_len=seq_len,
            embed_dim=embed_dim,
            width=width,
            layers=layers,
            heads=heads,
            diffusion_steps=diffusion_steps,
        )
        settings = DiffusionTrainSettings(
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            warmup_steps=warmup_steps,
            min_count=min_count,
            seed=seed,
            checkpoint_every=checkpoint_every,
        )
        metrics = train_diffusion_lm(config, settings, out, work_dir, resume=resume, figure=figure)
        typer.echo(
            f"wrote {out}: "
            + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        )

    return train_diffusion_lm


def _classifier_trainer():
    def train_diffusion_lm_classifier(
        model: Annotated[Path, typer.Option(help="The Diffusion-LM artifact whose latents to classify.")] = (
            DEFAULT_MODEL_DIR
        ),
        out: Annotated[Path, typer.Option(help="Artifact directory to write.")] = DEFAULT_CLASSIFIER_DIR,
        work_dir: Annotated[Path, typer.Option(help="Checkpoints go to WORK_DIR/checkpoint.")] = Path(
            "runs/diffusion-lm-classifier"
        ),
        steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 2000,
        batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 32,
        lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 3e-3,
        width: Annotated[int, typer.Option(help="Classifier transformer width.")] = 64,
        layers: Annotated[int, typer.Option(help="Classifier transformer layers.")] = 2,
        seed: Annotated[int, typer.Option(help="Seed.")] = 0,
        threads: Annotated[int, typer.Option(help="torch threads (0 = torch default).")] = 1,
        resume: Annotated[bool, typer.Option("--resume", help="Continue from WORK_DIR/checkpoint.")] = False,
    ) -> None:
        """Train the noised-latent attribute + POS classifier for Diffusion-LM control."""
        _setup(threads)
        from lmcontrol.diffusion_lm.classifiers import ClassifierTrainSettings, train_classifier

        settings = ClassifierTrainSettings(
            steps=steps, batch_size=batch_size, lr=lr, width=width, layers=layers, seed=seed
        )
        metrics = train_classifier(model, settings, out, work_dir, resume=resume)
        typer.echo(
            f"wrote {out}: "
            + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        )

    return train_diffusion_lm_classifier


def _span_classifier_trainer():
    def train_diffusion_lm_span_classifier(
        model: Annotated[Path, typer.Option(help="The Diffusion-LM artifact whose latents to classify.")] = (
            DEFAULT_MODEL_DIR
        ),
        out: Annotated[Path, typer.Option(help="Artifact directory to write.")] = DEFAULT_SPAN_CLASSIFIER_DIR,
        work_dir: Annotated[Path, typer.Option(help="Checkpoints go to WORK_DIR/checkpoint.")] = Path(
            "runs/diffusion-lm-span-classifier"
        ),
        steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 2000,
        batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 32,
        lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 3e-3,
        width: Annotated[int, typer.Option(help="Classifier transformer width.")] = 64,
        layers: Annotated[int, typer.Option(help="Classifier transformer layers.")] = 2,
        parse_limit: Annotated[int, typer.Option(help="E2E train sentences to parse with spaCy.")] = 42061,
        seed: Annotated[int, typer.Option(help="Seed.")] = 0,
        threads: Annotated[int, typer.Option(help="torch threads (0 = torch default).")] = 1,
        resume: Annotated[bool, typer.Option("--resume", help="Continue from WORK_DIR/checkpoint.")] = False,
    ) -> None:
        """Train the noised-latent syntax-span classifier (constituent = spaCy subtree span)."""
        _setup(threads)
        from lmcontrol.diffusion_lm.classifiers import ClassifierTrainSettings
        from lmcontrol.diffusion_lm.spans import train_span_classifier

        settings = ClassifierTrainSettings(
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            width=width,
            layers=layers,
            seed=seed,
            tag_limit=parse_limit,
        )
        metrics = train_span_classifier(model, settings, out, work_dir, resume=resume)
        typer.echo(
            f"wrote {out}: "
            + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        )

    return train_diffusion_lm_span_classifier


def _sample_command():
    def diffusion_lm(
        n: Annotated[int, typer.Option(help="Sentences to sample.")] = 8,
        model: Annotated[Path, typer.Option(help="Diffusion-LM artifact.")] = DEFAULT_MODEL_DIR,
        classifier: Annotated[
            Path, typer.Option(help="Latent classifier artifact.")
        ] = DEFAULT_CLASSIFIER_DIR,
        attribute: Annotated[
            str | None, typer.Option(help="Semantic content 'field=value', e.g. food=Italian.")
        ] = None,
        pos: Annotated[
            str | None, typer.Option(help="Space-separated UPOS tags, e.g. 'PROPN AUX DET NOUN PUNCT'.")
        ] = None,
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
        steps: Annotated[int, typer.Option(help="Diffusion steps.")] = 200,
        sampler: Annotated[str, typer.Option(help="ancestral or ddim.")] = "ancestral",
        step_size: Annotated[float, typer.Option(help="Guidance step size.")] = 0.1,
        fluency: Annotated[float, typer.Option(help="Guidance fluency weight λ.")] = 0.01,
        seed: Annotated[int, typer.Option(help="Seed.")] = 0,
        threads: Annotated[int, typer.Option(help="torch threads (0 = torch default).")] = 0,
    ) -> None:
        """Sample E2E sentences from Diffusion-LM, optionally controlled (attribute/POS/span/length/infilling)."""
        _setup(threads)
        from lmcontrol import LMControlError
        from lmcontrol.diffusion_lm.pipeline import ControlTarget, DiffusionLMPipeline, SampleSettings
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
        settings = SampleSettings(steps=steps, sampler=sampler, step_size=step_size, fluency=fluency)
        for text in pipe(n, target=target, settings=settings, seed=seed):
            typer.echo(text)

    return diffusion_lm


register_control(
    "fudge",
    lazy("lmcontrol.diffusion_lm.control", "fudge_from_spec"),
    "FUDGE guidance by the Diffusion-LM classifiers, fudge:attribute=food=Italian[,pos=TAGS][,span=I-J]"
    "[,length=N][,k=20][,weight=1] (AR baseline; with an E2E prefix use prefix:artifacts/prefix-e2e too)",
)
register_suite(
    "diffusion-lm",
    lazy("lmcontrol.diffusion_lm.bench", "make_suite"),
    "Diffusion-LM vs FUDGE AR per control task (semantic content, POS, span, length, infilling) + steps sweep",
)
METRICS.register(
    "e2e-control",
    lazy("lmcontrol.diffusion_lm.bench", "control_success"),
    "Diffusion-LM control success per task (%), prompts = target texts",
    needs=(),
    default_arg=None,
)
METRICS.register(
    "e2e-lm-score",
    lazy("lmcontrol.diffusion_lm.bench", "lm_score"),
    "perplexity of E2E samples under SmolLM2 + the E2E prefix (the Diffusion-LM lm-score)",
    needs=(),
    default_arg=None,
)
register_command("diffusion-lm", _sample_command, "Sample (controlled) sentences from the E2E Diffusion-LM.")
register_trainer(
    "diffusion-lm", _diffusion_lm_trainer, "Train a Diffusion-LM denoiser on E2E (Li et al. 2022)."
)
register_trainer(
    "diffusion-lm-classifier",
    _classifier_trainer,
    "Train the noised-latent attribute + POS classifier used to steer Diffusion-LM.",
)
register_trainer(
    "diffusion-lm-span-classifier",
    _span_classifier_trainer,
    "Train the noised-latent syntax-span classifier used to steer Diffusion-LM.",
)


def _demo(lm, console, max_new_tokens: int) -> None:  # noqa: ANN001 - LanguageModel / rich console (unused lm)
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
        ("infill: 'The Vaults is' ___ 'in the city centre .'",
         ControlTarget(left="The Vaults is", right="in the city centre .", middle=6)),
    ]
    for name, target in cases:
        texts = pipe(2, target=target, settings=settings, seed=0)
        table.add_row(name, "\n".join(texts))
    console.print(table)


register_demo("Diffusion-LM", _demo, "non-autoregressive E2E generation with plug-and-play control")
