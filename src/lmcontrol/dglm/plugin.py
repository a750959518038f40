"""Registry entries for DGLM (light: no torch at import)."""

from __future__ import annotations

from lmcontrol.registry import lazy, register_control, register_demo, register_suite, register_trainer

_CLI = "lmcontrol.dglm.cli"
register_trainer(
    "dglm-prompter",
    lazy(_CLI, "train_prompter_cmd").resolve,
    "Train DGLM's prompt generator (proposal embedding -> KV prefix of the frozen decoder).",
)
register_trainer(
    "dglm-diffusion",
    lazy(_CLI, "train_diffusion_cmd").resolve,
    "Train DGLM's semantic diffusion model over continuation embeddings.",
)
register_control(
    "dglm",
    lazy("lmcontrol.dglm.pipeline", "dglm_from_spec"),
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
    "dglm-toxicity-val",
    lazy("lmcontrol.dglm.bench", "toxicity_validation_suite"),
    "DGLM toxicity knobs (σ², CFG 0, w = 100) on validation RTP prompts (rows 300-349): how the settings were chosen",
)
register_suite(
    "dglm-sentiment",
    lazy("lmcontrol.dglm.bench", "sentiment_suite"),
    "DGLM toward positive / negative sentiment, alone and composed with a topic, on neutral prompts",
)
register_demo("DGLM", lazy(_CLI, "demo"), "diffusion-guided generation steered by linear probes")
