"""``lmcontrol train dglm-prompter`` and ``lmcontrol train dglm-diffusion`` (light at import: typer only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmcontrol import LMControlError

_Sources = Annotated[str, typer.Option(help="Comma-separated text sources for the 32+32-token pairs (c4, wikitext).")]
_Model = Annotated[str | None, typer.Option(help="Decoder LM (default: embedded SmolLM2-135M).")]
_Encoder = Annotated[str | None, typer.Option(help="sentence-transformers encoder (default: packaged MiniLM).")]
_Resume = Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.")]


def _sources(raw: str) -> tuple[str, ...]:
    from lmcontrol.dglm.pairs import SOURCES

    out = tuple(s.strip() for s in raw.split(",") if s.strip())
    bad = [s for s in out if s not in SOURCES]
    if not out or bad:
        raise LMControlError(f"--sources: unknown source(s) {bad or raw!r} (known: {', '.join(SOURCES)})")
    return out


def train_prompter_cmd(
    out: Annotated[Path, typer.Option(help="Artifact directory.")] = Path("artifacts/dglm-prompter"),
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 400,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.")] = 8,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    length: Annotated[int, typer.Option(help="Virtual tokens per layer (m).")] = 8,
    kind: Annotated[str, typer.Option(help="Generator: 'mlp' (direct map) or 'transformer'.")] = "mlp",
    hidden: Annotated[int, typer.Option(help="MLP hidden width (kind=mlp).")] = 512,
    rank: Annotated[int, typer.Option(help="Rank of the MLP output map (0 = full; kind=mlp).")] = 128,
    width: Annotated[int, typer.Option(help="Noise-level features; transformer width (kind=transformer).")] = 256,
    layers: Annotated[int, typer.Option(help="Generator transformer layers (kind=transformer).")] = 2,
    init_scale: Annotated[float, typer.Option(help="Scale of the output map's initial weights.")] = 1.0,
    augment_scale: Annotated[float, typer.Option(help="Log-SNR shift of the noise-augmentation schedule.")] = 2.0,
    examples: Annotated[int | None, typer.Option(help="Training pairs to use (default: all).")] = None,
    eval_pairs: Annotated[int, typer.Option(help="Held-out pairs for the proposal gap at checkpoints.")] = 48,
    min_prefix: Annotated[int, typer.Option(help="Shortest prefix (tokens) prefixes are randomly cut to.")] = 4,
    inference_share: Annotated[
        float, typer.Option(help="Share of rows noised to the inference σ² (rest: shifted cosine schedule).")
    ] = 0.5,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint + proposal-gap interval (steps).")] = 100,
    sources: _Sources = "c4,wikitext",
    model: _Model = None,
    encoder: _Encoder = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
    resume: _Resume = False,
) -> None:
    """Train DGLM's prompt generator: noised continuation embedding -> KV prefix for the frozen decoder."""
    import torch

    from lmcontrol.dglm.config import PromptGeneratorConfig
    from lmcontrol.dglm.train import PrompterRun, check_resume, train_prompter
    from lmcontrol.models import encoder_id, load_lm
    from lmcontrol.training import TrainConfig

    check_resume(out, resume)
    run = PrompterRun(
        batch_size=batch_size,
        examples=examples,
        eval_pairs=eval_pairs,
        sources=_sources(sources),
        min_prefix=min_prefix,
        inference_share=inference_share,
    )
    torch.set_num_threads(threads)
    lm = load_lm(model)
    info = lm.info
    config = PromptGeneratorConfig(
        encoder=encoder_id(encoder),
        length=length,
        kind=kind,
        hidden=hidden,
        rank=rank,
        width=width,
        layers=layers,
        init_scale=init_scale,
        num_layers=info.num_layers,
        num_kv_heads=info.num_kv_heads,
        head_dim=info.head_dim,
        augment_scale=augment_scale,
    )
    train_config = TrainConfig(
        steps=steps,
        lr=lr,
        seed=seed,
        warmup_steps=min(50, steps // 10),
        checkpoint_every=checkpoint_every,
        log_every=max(1, min(25, steps)),
    )
    _, metrics = train_prompter(lm, config, train_config, run, out, resume=resume, encoder=encoder)
    typer.echo(f"saved {out}: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))


def train_diffusion_cmd(
    out: Annotated[Path, typer.Option(help="Artifact directory.")] = Path("artifacts/dglm-diffusion"),
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 3000,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.")] = 128,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    feature_tokens: Annotated[int, typer.Option(help="k feature tokens the embedding is split into.")] = 4,
    width: Annotated[int, typer.Option(help="Transformer width.")] = 128,
    layers: Annotated[int, typer.Option(help="Transformer layers.")] = 3,
    cond_dropout: Annotated[float, typer.Option(help="Prefix dropout for classifier-free guidance.")] = 0.1,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint + held-out loss interval (steps).")] = 500,
    sources: _Sources = "c4,wikitext",
    model: _Model = None,
    encoder: _Encoder = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
    resume: _Resume = False,
) -> None:
    """Train DGLM's semantic diffusion model (v-prediction over continuation embeddings, prefix-conditioned)."""
    import torch

    from lmcontrol.dglm.config import SemanticDiffusionConfig
    from lmcontrol.dglm.train import DiffusionRun, check_resume, train_diffusion
    from lmcontrol.models import encoder_id, load_encoder, load_lm
    from lmcontrol.training import TrainConfig

    check_resume(out, resume)
    torch.set_num_threads(threads)
    enc = load_encoder(encoder)
    dim = int((getattr(enc, "get_embedding_dimension", None) or enc.get_sentence_embedding_dimension)())
    config = SemanticDiffusionConfig(
        embed_dim=dim,
        encoder=encoder_id(encoder),
        feature_tokens=feature_tokens,
        width=width,
        layers=layers,
        cond_dropout=cond_dropout,
    )
    train_config = TrainConfig(
        steps=steps,
        lr=lr,
        seed=seed,
        warmup_steps=min(500, steps // 10),
        checkpoint_every=checkpoint_every,
        log_every=max(1, min(100, steps)),
        weight_decay=0.01,
    )
    lm = load_lm(model)  # only its tokenizer cuts the pairs (so they match the prompt generator's)
    _, metrics = train_diffusion(
        lm,
        config,
        train_config,
        DiffusionRun(batch_size=batch_size, sources=_sources(sources)),
        out,
        resume=resume,
        encoder=encoder,
    )
    typer.echo(f"saved {out}: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))


def prompter_factory() -> object:
    return train_prompter_cmd


def diffusion_factory() -> object:
    return train_diffusion_cmd
