"""Registry entries for DGLM (light: no torch at import)."""

from __future__ import annotations

from typing import Any

from lmcontrol.registry import register_control, register_demo, register_suite, register_trainer


def _lazy(module: str, attr: str) -> Any:
    def factory(*args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    return factory


register_trainer(
    "dglm-prompter",
    _lazy("lmcontrol.dglm.cli", "prompter_factory"),
    "Train DGLM's prompt generator (proposal embedding -> KV prefix of the frozen decoder).",
)
register_trainer(
    "dglm-diffusion",
    _lazy("lmcontrol.dglm.cli", "diffusion_factory"),
    "Train DGLM's semantic diffusion model over continuation embeddings.",
)
register_control(
    "dglm",
    _lazy("lmcontrol.dglm.pipeline", "dglm_from_spec"),
    "DGLM: diffusion proposal -> KV prefix, dglm:guide=sentiment:positive:10,avoid=toxicity:toxic:20,noise=0.05",
)


def _suite() -> Any:
    """``lmcontrol bench dglm``: open generation on held-out prefixes, base AR vs DGLM at CFG scales 1 and 2
    (judge perplexity, Dist-n, MAUVE vs the human continuations). The other parts of the issue's benchmark
    (noise sweep, toxicity vs baselines, sentiment, composition, runtime) are in ``benchmarks/dglm.py``."""
    from lmcontrol.bench.suite import BenchMethod, BenchSuite
    from lmcontrol.generation import GenerationConfig

    def prompts(n: int) -> list[dict[str, Any]]:
        import torch

        from lmcontrol.dglm.pairs import build_pairs
        from lmcontrol.models import load_lm

        _, ho = build_pairs(load_lm(None))
        idx = torch.randperm(len(ho), generator=torch.Generator().manual_seed(0))[:n]
        return [{"prompt": ho.prefix_text[i], "reference": ho.cont_text[i]} for i in idx]

    def dglm(cfg: float) -> Any:
        def build(lm: Any) -> list[Any]:
            from lmcontrol.dglm.pipeline import DGLMControl, DGLMPipeline, DGLMSettings

            return [DGLMControl(DGLMPipeline.from_pretrained(lm), DGLMSettings(cfg_scale=cfg))]

        return build

    return BenchSuite(
        name="dglm",
        prompts=prompts,
        methods=(
            BenchMethod("base", help="the frozen decoder alone"),
            BenchMethod("dglm", controls=dglm(1.0), help="DGLM, CFG scale 1"),
            BenchMethod("dglm-cfg2", controls=dglm(2.0), help="DGLM, CFG scale 2"),
        ),
        metrics=("ppl", "dist", "mauve"),
        generation=GenerationConfig(max_new_tokens=32, temperature=1.0, top_p=0.95, chat=False),
    )


register_suite("dglm", _suite, "DGLM vs the plain decoder on held-out C4/WikiText prefixes (ppl, Dist-n, MAUVE)")


def _demo(lm: Any, console: Any, max_new_tokens: int) -> None:
    """Base vs DGLM-guided continuations: away from toxicity, toward positive / negative sentiment."""
    from rich.markup import escape
    from rich.table import Table

    from lmcontrol.dglm.pipeline import DGLMPipeline, DGLMSettings
    from lmcontrol.eval.sentiment import vader_compound
    from lmcontrol.eval.toxicity import get_toxicity_scorer
    from lmcontrol.generation import GenerationConfig, generate

    pipe = DGLMPipeline.from_pretrained(lm)
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, chat=False, temperature=0.0)
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
    table = Table("prompt", *runs, title="DGLM: (toxicity | VADER sentiment) of each continuation", show_lines=True)
    scored = {k: (tox.score(v), vader_compound(v)) for k, v in runs.items()}
    for i, p in enumerate(prompts):
        table.add_row(
            p,
            *[f"{escape(runs[k][i].strip())}\n(tox {scored[k][0][i]:.2f} | sent {scored[k][1][i]:+.2f})" for k in runs],
        )
    console.print(table)


register_demo("DGLM", _demo, "diffusion-guided generation steered by linear probes")
