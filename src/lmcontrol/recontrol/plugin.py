"""Registry entries for RE-Control and its baselines (light: no torch at import)."""

from __future__ import annotations

from lmcontrol.registry import lazy as _lazy
from lmcontrol.registry import register_control, register_demo, register_suite, register_trainer

_B = "lmcontrol.recontrol.baselines"
register_control(
    "recontrol",
    _lazy("lmcontrol.recontrol.control", "recontrol_from_spec"),
    "RE-Control: gradient ascent on a value network, recontrol:DIR,step_size=A,steps=N",
)
register_control(
    "static-re",
    _lazy(_B, "static_re_from_spec"),
    "static representation editing: add a mean reward direction, static-re:DIR,scale=S",
)
register_control(
    "cd", _lazy(_B, "cd_from_spec"), "controlled decoding: top-k re-ranked by value, cd:DIR,topk=K"
)
register_control(
    "cd-prefix",
    _lazy(_B, "cd_prefix_from_spec"),
    "controlled decoding, soft: logits + beta*V of each prefix, cd-prefix:DIR,topk=K,beta=B",
)
register_trainer(
    "recontrol",
    _lazy("lmcontrol.recontrol.cli", "factory"),
    "Train a RE-Control value network on HH rollouts.",
)
register_suite(
    "recontrol",
    _lazy("lmcontrol.recontrol.bench", "make_suite"),
    "RE-Control vs prompting, static RE, CD, CD-prefix, best-of-4 on held-out HH prompts",
)
register_suite(
    "recontrol-sentiment",
    _lazy("lmcontrol.recontrol.bench", "make_sentiment_suite"),
    "RE-Control towards positive sentiment (SST-2 probe reward, VADER judge) vs prompting, static RE",
)
register_suite(
    "recontrol-harmless",
    _lazy("lmcontrol.recontrol.bench", "make_harmless_suite"),
    "RE-Control away from toxicity on RTP toxic prompts (Jigsaw probe reward, BiLSTM judge)",
)
register_suite(
    "recontrol-ablation",
    _lazy("lmcontrol.recontrol.bench", "make_ablation_suite"),
    "RE-Control ablation: reward and diversity vs step size alpha and updates n (val HH prompts)",
)
register_demo(
    "RE-Control",
    _lazy("lmcontrol.recontrol.cli", "demo"),
    "test-time alignment by editing hidden states with a value network",
)
