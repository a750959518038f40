"""Registry entries for DGLM (light: no torch at import)."""

from __future__ import annotations

from typing import Any

from lmcontrol.registry import lazy, register_control, register_demo, register_suite, register_trainer

register_trainer(
    "dglm-prompter",
    lazy("lmcontrol.dglm.cli", "prompter_factory"),
    "Train DGLM's prompt generator (proposal embedding -> KV prefix of the frozen decoder).",
)
register_trainer(
    "dglm-diffusion",
    lazy("lmcontrol.dglm.cli", "diffusion_factory"),
    "Train DGLM's semantic diffusion model over continuation embeddings.",
)
register_control(
    "dglm",
    lazy("lmcontrol.dglm.control", "dglm_from_spec"),
    "DGLM: diffusion proposal -> KV prefix, dglm:guide=sentiment:positive:10,avoid=toxicity:toxic:20,noise=0.05",
)


register_suite(
    "dglm",
    lazy("lmcontrol.dglm.bench", "open_suite"),
    "DGLM vs the plain decoder on held-out C4/WikiText prefixes, CFG 1/2 and the σ² sweep (ppl, Dist-n, MAUVE)",
)
register_suite(
    "dglm-toxicity",
    lazy("lmcontrol.dglm.bench", "toxicity_suite"),
    "DGLM avoiding toxicity vs prompting, a steering vector and probe FUDGE on RTP non-toxic prompts",
)
register_suite(
    "dglm-sentiment",
    lazy("lmcontrol.dglm.bench", "sentiment_suite"),
    "DGLM toward positive / negative sentiment, alone and composed with a topic, on neutral prompts",
)


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
