"""DGLM's benchmark suites (``lmcontrol bench NAME``): DGLM against the plain decoder and attribute-control
baselines, every method run side by side by the bench harness.

    lmcontrol bench dglm --n 500              # open generation on held-out C4/WikiText prefixes + the σ² sweep
    lmcontrol bench dglm-toxicity --n 40 --samples 4        # RTP non-toxic prompts: DGLM vs baselines
    lmcontrol bench dglm-sentiment --n 12 --samples 4       # neutral prompts: sentiment, sentiment x topic

``--prompts FILE`` (JSONL with ``prompt`` and, for MAUVE, ``reference``) replaces a suite's default prompts.
Decoding is nucleus sampling (T = 1, p = 0.95, as in the paper), 32 new tokens, chat template off (the decoder
continues raw text); DGLM samples its proposal with DDIM in 25 steps at σ² = 0.05 unless a method says
otherwise. Judges: perplexity under the embedded SmolLM2 (the decoder itself), MAUVE on MiniLM features,
toxicity by the Jigsaw BiLSTM port (independent of the MiniLM toxicity probe that guides), sentiment by VADER
(independent) and the SST-2 probe (the one that guides), topic by the AG News probe (the one that guides).
``proposal_diagnostic`` measures the diffusion stage alone (``benchmarks/dglm.py proposal``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from lmcontrol.bench.suite import BenchMethod, BenchSuite, rows_from_dataset
from lmcontrol.generation import GenerationConfig

if TYPE_CHECKING:
    from lmcontrol.controls import Control
    from lmcontrol.dglm.pipeline import DGLMPipeline
    from lmcontrol.models import LanguageModel

GENERATION = GenerationConfig(max_new_tokens=32, temperature=1.0, top_p=0.95, chat=False)
BATCH = 16
FUDGE_WEIGHT = 5.0  # FUDGE's probe weight (log-prob units added to the log-probabilities)
POLITE = "Continue the text politely, without any rude or toxic language."
NEUTRAL = (
    "The meeting is scheduled for",
    "I went to the store and",
    "The weather today is",
    "My neighbour told me that",
    "The new restaurant downtown",
    "Last week the company announced",
    "The book I am reading",
    "Our trip to the coast",
    "The movie started at eight and",
    "When I opened the letter,",
    "The city council decided to",
    "This morning the train",
)
_PIPELINES: dict[int, DGLMPipeline] = {}


def pipeline(lm: LanguageModel) -> DGLMPipeline:
    """The committed artifacts' pipeline for ``lm``, loaded once per process."""
    from lmcontrol.dglm.pipeline import DGLMPipeline

    if id(lm) not in _PIPELINES:
        _PIPELINES[id(lm)] = DGLMPipeline.from_pretrained(lm)
    return _PIPELINES[id(lm)]


def heldout(n: int) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """``n`` held-out (prefix, human continuation) rows, a fixed random subset (seed 0), and the continuations'
    unit encoder embeddings (n, d)."""
    from lmcontrol.dglm.pairs import build_pairs
    from lmcontrol.models import load_lm

    _, ho = build_pairs(load_lm(None))
    idx = torch.randperm(len(ho), generator=torch.Generator().manual_seed(0))[:n]
    return [{"prompt": ho.prefix_text[i], "reference": ho.cont_text[i]} for i in idx], ho.cont_emb[idx]


def heldout_prompts(n: int) -> list[dict[str, Any]]:
    """The prompt loader of ``lmcontrol bench dglm``: ``heldout(n)``'s rows."""
    return heldout(n)[0]


def neutral_prompts(n: int) -> list[dict[str, Any]]:
    """The first ``n`` of 12 neutral sentence openings (use ``--samples`` for several continuations each)."""
    return [{"prompt": p} for p in NEUTRAL[:n]]


def dglm(guides: Sequence[tuple[Any, ...]] = (), **settings: Any):  # noqa: ANN201
    """``controls(lm)`` for DGLM with ``DGLMSettings(**settings)``; ``guides`` are (probe, label, weight, away)."""

    def build(lm: LanguageModel) -> list[Control]:
        from lmcontrol.dglm.control import DGLMControl
        from lmcontrol.dglm.pipeline import DGLMSettings

        pipe = pipeline(lm)
        return [DGLMControl(pipe, DGLMSettings(guides=tuple(pipe.guide(*g) for g in guides), **settings))]

    return build


def open_suite() -> BenchSuite:
    """Open generation on held-out prefixes: base AR vs DGLM at CFG 1 and 2, and DGLM over the σ² sweep."""
    noise = [BenchMethod(f"dglm-noise-{s:g}", controls=dglm(noise=s), help=f"DGLM, σ² = {s:g}") for s in
             (0.0, 0.2, 0.5, 1.0)]  # fmt: skip
    return BenchSuite(
        name="dglm",
        prompts=heldout_prompts,
        methods=(
            BenchMethod("base", help="the frozen decoder alone"),
            BenchMethod("dglm", controls=dglm(), help="DGLM, CFG scale 1, σ² = 0.05"),
            BenchMethod("dglm-cfg2", controls=dglm(cfg_scale=2.0), help="DGLM, CFG scale 2"),
            *noise,
        ),
        metrics=("ppl", "dist", "mauve"),
        generation=GENERATION,
        batch_size=BATCH,
    )


def _steering(lm: LanguageModel) -> list[Control]:
    """Mean-difference steering vector: 200 clean minus 200 toxic Jigsaw comments, middle layer, scale 4."""
    from lmcontrol.data import load_dataset
    from lmcontrol.steering import SteeringVector

    rows = load_dataset("jigsaw", split="train")
    toxic = [r["text"] for r in rows if r["label"] == 1][:200]
    clean = [r["text"] for r in rows if r["label"] == 0][:200]
    return [SteeringVector.from_contrast(lm, toward=clean, away=toxic, layer=lm.info.num_layers // 2, scale=4.0)]


def _probe_fudge(lm: LanguageModel) -> list[Control]:
    from lmcontrol.dglm.baselines import ProbeFudge

    pipe = pipeline(lm)
    return [ProbeFudge([pipe.guide("toxicity", "toxic", FUDGE_WEIGHT, away=True)], pipe.encoder)]


def _system(text: str) -> Callable[[LanguageModel], list[Control]]:
    def build(lm: LanguageModel) -> list[Control]:
        from lmcontrol.steering import SystemPrompt

        return [SystemPrompt(text)]

    return build


def toxicity_suite() -> BenchSuite:
    """RealToxicityPrompts non-toxic prompts: DGLM (avoid-toxicity weights) vs prompting, a steering vector and
    FUDGE with the same probe."""
    avoid = [
        BenchMethod(f"dglm-avoid-w{w:g}", controls=dglm(guides=(("toxicity", "toxic", w, True),)),
                    help=f"DGLM pushed away from the toxicity probe, w = {w:g}")
        for w in (10.0, 30.0)
    ]  # fmt: skip
    return BenchSuite(
        name="dglm-toxicity",
        prompts=rows_from_dataset("rtp:nontoxic", field="prompt"),
        methods=(
            BenchMethod("base", help="the frozen decoder alone"),
            BenchMethod("prompting", controls=_system(POLITE), help="a polite-continuation system message"),
            BenchMethod("steering-vector", controls=_steering, help="clean − toxic mean state, middle layer"),
            BenchMethod("fudge-probe", controls=_probe_fudge, help=f"FUDGE, toxicity probe, w = {FUDGE_WEIGHT:g}"),
            BenchMethod("dglm", controls=dglm(), help="DGLM without guidance"),
            *avoid,
        ),
        metrics=("toxicity", "ppl", "dist"),
        generation=GENERATION,
        batch_size=BATCH,
    )


def sentiment_suite() -> BenchSuite:
    """Neutral prompts: positive / negative sentiment at two weights, and sentiment x topic composed (w = 10)."""
    methods = [BenchMethod("base", help="the frozen decoder alone")]
    for label in ("positive", "negative"):
        for w in (10.0, 30.0):
            methods.append(BenchMethod(f"dglm-{label}-w{w:g}", controls=dglm(guides=(("sentiment", label, w),)),
                                       help=f"DGLM toward {label} sentiment, w = {w:g}"))  # fmt: skip
    for label in ("positive", "negative"):
        for topic, short in (("Sports", "sports"), ("Sci/Tech", "scitech")):
            guides = (("sentiment", label, 10.0), ("topic", topic, 10.0))
            methods.append(BenchMethod(f"dglm-{label}+{short}", controls=dglm(guides=guides),
                                       help=f"DGLM: {label} sentiment and topic {topic}, w = 10 each"))  # fmt: skip
    return BenchSuite(
        name="dglm-sentiment",
        prompts=neutral_prompts,
        methods=tuple(methods),
        metrics=("sentiment", "topic", "ppl", "dist"),
        generation=GENERATION,
        batch_size=BATCH,
    )


@torch.no_grad()
def proposal_diagnostic(lm: LanguageModel, n: int = 128, steps: int = 25) -> dict[str, dict[str, float]]:
    """What the diffusion stage alone delivers, before the prompt generator: cosine of the proposal with the true
    and with a random held-out continuation at CFG scales, and probe probabilities of guided proposals."""
    from lmcontrol.dglm.guidance import guided_denoiser
    from lmcontrol.diffusion.samplers import sample_ddim

    pipe = pipeline(lm)
    m = pipe.diffusion
    rows, true = heldout(n)  # true: (n, d) unit embeddings of the human continuations
    ctx = pipe.encode([r["prompt"] for r in rows])
    z = torch.randn(ctx.shape, generator=torch.Generator().manual_seed(0))

    def propose(guides: Sequence[Any] = (), cfg: float = 1.0) -> torch.Tensor:
        den = guided_denoiser(m, ctx, cfg, guides, generator=torch.Generator().manual_seed(1))
        return m.space.to_unit(sample_ddim(den, z, m.schedule.timesteps(steps)))

    scores: dict[str, dict[str, float]] = {}
    for cfg in (0.0, 1.0, 2.0, 3.0):
        u = propose(cfg=cfg)
        scores[f"cfg={cfg:g}"] = {
            "cos_true_continuation": float((u * true).sum(-1).mean()),
            "cos_random_continuation": float((u * true.roll(1, 0)).sum(-1).mean()),
        }
    for probe, label, away in (
        ("sentiment", "positive", False),
        ("sentiment", "negative", False),
        ("toxicity", "toxic", True),
        ("topic", "Sports", False),
    ):
        for w in (0.0, 3.0, 10.0, 30.0):
            g = pipe.guide(probe, label, w, away=away)
            u = propose((g,) if w else ())
            p = float(g.probe(u).softmax(-1)[:, g.label].mean())
            scores[f"{'avoid' if away else 'guide'} {probe}:{label} w={w:g}"] = {"probe_p(label)": p}
    return scores
