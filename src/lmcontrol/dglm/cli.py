"""``lmcontrol train dglm-prompter`` and ``lmcontrol train dglm-diffusion``, and DGLM's section of ``lmcontrol demo``
(light at import: typer and the torch-free configs; the options come from ``PromptGeneratorConfig``,
``PrompterRun``, ``SemanticDiffusionConfig``, ``DiffusionRun`` and ``TrainConfig``, whose field docs are the help).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from lmcontrol import LMControlError
from lmcontrol.cli.config_options import Model, Resume, check_resume, config_options
from lmcontrol.dglm.config import DiffusionRun, PrompterRun, PromptGeneratorConfig, SemanticDiffusionConfig
from lmcontrol.train_config import TrainConfig

SOURCES = ("c4", "wikitext")  # dglm.pairs.SOURCES, kept torch-free here
_Sources = Annotated[str, typer.Option(help="Comma-separated text sources for the 32+32-token pairs (c4, wikitext).")]
_Encoder = Annotated[str | None, typer.Option(help="sentence-transformers encoder (default: packaged MiniLM).")]
_Threads = Annotated[int, typer.Option(help="torch CPU threads.")]
_TRAIN = ("steps", "lr", "seed", "checkpoint_every")


def _sources(raw: str) -> tuple[str, ...]:
    out = tuple(s.strip() for s in raw.split(",") if s.strip())
    bad = [s for s in out if s not in SOURCES]
    if not out or bad:
        raise LMControlError(f"--sources: unknown source(s) {bad or raw!r} (known: {', '.join(SOURCES)})")
    return out


@config_options(
    "config",
    PromptGeneratorConfig,
    include=("length", "kind", "hidden", "rank", "width", "layers", "init_scale", "augment_scale", "prefix_input"),
)
@config_options(
    "run",
    PrompterRun,
    include=("batch_size", "examples", "eval_pairs", "min_prefix", "inference_share", "targets", "init"),
)
@config_options("train", TrainConfig, include=_TRAIN, defaults={"steps": 400, "checkpoint_every": 100})
def train_prompter_cmd(
    config: PromptGeneratorConfig,
    run: PrompterRun,
    train: TrainConfig,
    out: Annotated[Path, typer.Option(help="Artifact directory.")] = Path("artifacts/dglm-prompter"),
    sources: _Sources = "c4,wikitext",
    model: Model = None,
    encoder: _Encoder = None,
    threads: _Threads = 1,
    resume: Resume = False,
) -> None:
    """Train DGLM's prompt generator: noised continuation embedding -> KV prefix for the frozen decoder."""
    check_resume(out, resume)
    run = dataclasses.replace(run, sources=_sources(sources))
    import torch

    from lmcontrol.dglm.train import train_prompter
    from lmcontrol.models import encoder_id, load_lm

    torch.set_num_threads(threads)
    lm = load_lm(model)
    info = lm.info
    config = dataclasses.replace(
        config,
        encoder=encoder_id(encoder),
        num_layers=info.num_layers,
        num_kv_heads=info.num_kv_heads,
        head_dim=info.head_dim,
    )
    steps = train.steps
    train = dataclasses.replace(train, warmup_steps=min(50, steps // 10), log_every=max(1, min(25, steps)))
    _, metrics = train_prompter(lm, config, train, run, out, resume=resume, encoder=encoder)
    typer.echo(f"saved {out}: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))


@config_options(
    "config",
    SemanticDiffusionConfig,
    include=("feature_tokens", "width", "layers", "cond_dropout"),
    defaults={"feature_tokens": 4, "width": 128, "layers": 3},
)
@config_options("run", DiffusionRun, include=("batch_size",), defaults={"batch_size": 128})
@config_options("train", TrainConfig, include=_TRAIN, defaults={"steps": 3000, "checkpoint_every": 500})
def train_diffusion_cmd(
    config: SemanticDiffusionConfig,
    run: DiffusionRun,
    train: TrainConfig,
    out: Annotated[Path, typer.Option(help="Artifact directory.")] = Path("artifacts/dglm-diffusion"),
    sources: _Sources = "c4,wikitext",
    model: Model = None,
    encoder: _Encoder = None,
    threads: _Threads = 1,
    resume: Resume = False,
) -> None:
    """Train DGLM's semantic diffusion model (v-prediction over continuation embeddings, prefix-conditioned)."""
    check_resume(out, resume)
    run = dataclasses.replace(run, sources=_sources(sources))
    import torch

    from lmcontrol.dglm.train import train_diffusion
    from lmcontrol.models import encoder_id, load_encoder, load_lm

    torch.set_num_threads(threads)
    enc = load_encoder(encoder)
    dim = int((getattr(enc, "get_embedding_dimension", None) or enc.get_sentence_embedding_dimension)())
    config = dataclasses.replace(config, embed_dim=dim, encoder=encoder_id(encoder))
    steps = train.steps
    train = dataclasses.replace(
        train, warmup_steps=min(500, steps // 10), log_every=max(1, min(100, steps)), weight_decay=0.01
    )
    lm = load_lm(model)  # only its tokenizer cuts the pairs (so they match the prompt generator's)
    _, metrics = train_diffusion(lm, config, train, run, out, resume=resume, encoder=encoder)
    typer.echo(f"saved {out}: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))


def demo(lm: Any, console: Any, max_new_tokens: int) -> None:
    """Base vs DGLM-guided continuations: away from toxicity, toward positive / negative sentiment."""
    from rich.markup import escape
    from rich.table import Table

    from lmcontrol.dglm.pipeline import DGLMPipeline, DGLMSettings
    from lmcontrol.eval.sentiment import vader_compound
    from lmcontrol.eval.toxicity import get_toxicity_scorer
    from lmcontrol.generation import GenerationConfig, generate

    pipe = DGLMPipeline.from_pretrained(lm)
    # nucleus sampling with one seed for every column, as DGLM is evaluated (paper, and `lmcontrol bench dglm-*`):
    # under greedy decoding a KV prefix rarely changes the argmax, and guided columns often equal the base one
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, chat=False, temperature=1.0, top_p=0.95, seed=0)
    prompts = ["I can't believe those idiots at the", "The new restaurant downtown"]
    runs = {
        "base": generate(lm, prompts, cfg).texts,
        "DGLM avoid toxic": pipe(
            prompts, DGLMSettings(guides=(pipe.guide("toxicity", "toxic", 20, away=True),)), cfg
        ).texts,
        "DGLM positive": pipe(prompts, DGLMSettings(guides=(pipe.guide("sentiment", "positive", 10),)), cfg).texts,
        "DGLM negative": pipe(prompts, DGLMSettings(guides=(pipe.guide("sentiment", "negative", 10),)), cfg).texts,
    }
    tox = get_toxicity_scorer()
    title = "DGLM (nucleus sampling, p = 0.95, seed 0): (toxicity | VADER sentiment) of each continuation"
    table = Table("prompt", *runs, title=title, show_lines=True)
    scored = {k: (tox.score(v), vader_compound(v)) for k, v in runs.items()}
    for i, p in enumerate(prompts):
        table.add_row(
            p,
            *[f"{escape(runs[k][i].strip())}\n(tox {scored[k][0][i]:.2f} | sent {scored[k][1][i]:+.2f})" for k in runs],
        )
    console.print(table)
