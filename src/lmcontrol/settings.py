"""Where lmcontrol keeps things: the model cache and the shared data root.

Both are environment settings so CI, tests and users can redirect them without code changes:
- ``LMCONTROL_CACHE`` (default ``~/.cache/lmcontrol``): converted model weights.
- ``LMCONTROL_DATA`` (default ``../shared/data`` relative to the repository): the shared data sets.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
# Trained artifacts committed with the repo (value nets, probes, prefixes, ...) live here.
ARTIFACTS_DIR = REPO_ROOT / "artifacts"


def cache_dir() -> Path:
    """Root of lmcontrol's own cache (converted embedded-model weights)."""
    return Path(os.environ.get("LMCONTROL_CACHE", Path.home() / ".cache" / "lmcontrol")).expanduser()
