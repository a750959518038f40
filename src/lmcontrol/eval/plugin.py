"""Registry entries of ``lmcontrol.eval``: the built-in metrics, the named rewards, ``lmcontrol train reward``
and ``lmcontrol train probe`` (light: no torch at import; the commands live in ``eval/cli.py``)."""

from __future__ import annotations

import lmcontrol.eval.suite  # noqa: F401 - registers the built-in metrics (pure Python, light)
from lmcontrol.registry import lazy, register_reward, register_trainer

_R = "lmcontrol.eval.reward"
register_reward("hh", lazy(_R, "hh_reward"), "Bradley-Terry HH-RLHF reward (artifacts/hh-reward)")
register_reward("harmless", lazy(_R, "harmless_reward"), "1 - toxicity of the response (Jigsaw)")
register_reward("sentiment", lazy(_R, "sentiment_reward"), "P(positive) under the SST-2 probe")
register_trainer("reward", lazy("lmcontrol.eval.cli", "reward_factory"), "Bradley-Terry reward model on HH-RLHF pairs.")
register_trainer(
    "probe", lazy("lmcontrol.eval.cli", "probe_factory"), "Logistic-regression probe on sentence embeddings."
)
