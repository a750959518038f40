"""Registry entries for red-teaming (light: no torch at import)."""

from __future__ import annotations

from typing import Any

from lmcontrol.registry import register_command, register_suite, register_trainer


def _lazy(module: str, attr: str) -> Any:
    def factory(*args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    return factory


register_trainer(
    "investigator",
    _lazy("lmcontrol.redteam.cli", "train_factory"),
    "Train a red-team investigator q(x|y): SFT, variational objective, Frank-Wolfe rounds.",
)
register_command(
    "redteam",
    _lazy("lmcontrol.redteam.cli", "redteam_factory"),
    "Attack behaviours (AdvBench CSV / JSONL) with the investigator, plain sampling or nanoGCG; audit controls.",
)
register_suite(
    "redteam",
    _lazy("lmcontrol.redteam.bench", "make_suite"),
    "investigator vs nanoGCG, plain sampling, SFT-only, single rounds on held-out AdvBench; audit of controls",
)
