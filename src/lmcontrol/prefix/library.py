"""Moved to ``lmcontrol.prefix.control`` (kept for old imports; to be removed)."""

from lmcontrol.prefix.control import PREFIX_KINDS, PrefixLibrary, single_prefix_control

__all__ = ["PREFIX_KINDS", "PrefixLibrary", "single_prefix_control"]
