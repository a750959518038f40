"""lmcontrol: control pretrained language models without retraining them.

The package is a small core — models, one generation loop with hook points, artifacts, data, evaluation —
plus one sub-package per control method that plugs into the core through `lmcontrol.controls.Control`.
Heavy dependencies (torch, transformers) are imported lazily so `lmcontrol --help` stays fast.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "LMControlError"]


class LMControlError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits with code 2."""
