"""Registry entries of the engine (light: no torch at import): ``lmcontrol bench engine``."""

from __future__ import annotations

from lmcontrol.registry import lazy, register_suite

register_suite(
    "engine",
    lazy("lmcontrol.engine.bench", "make_suite"),
    "engine vs model.generate (and llama.cpp): tokens/s ratios at batch 1 and 8, continuous batching",
)
