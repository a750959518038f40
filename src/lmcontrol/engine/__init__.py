"""The serving engine: one model, a batch of requests that each carry their own controls and settings.

``Engine(lm).submit(Request(...)) -> RequestHandle``; see ``engine.py`` for the step, ``step.py`` for the
per-row forward, ``runner.py`` for the model forward over the slot cache (``cache.py``). Names are imported on
first use, so ``lmcontrol.engine.plugin`` (registry discovery, ``lmcontrol --help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Engine": "lmcontrol.engine.engine",
    "SamplingParams": "lmcontrol.engine.params",
    "QueueFull": "lmcontrol.engine.request",
    "Request": "lmcontrol.engine.request",
    "RequestHandle": "lmcontrol.engine.request",
    "RequestOutput": "lmcontrol.engine.request",
    "TokenEvent": "lmcontrol.engine.request",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lmcontrol.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
