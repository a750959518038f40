"""Registry entries for the generic controls of ``lmcontrol.steering`` (light: no torch at import).

Imported by ``registry.discover()`` with the method packages' plugins; methods build on these controls instead of
registering their own copies.
"""

from __future__ import annotations

from lmcontrol.registry import lazy, register_control

_S = "lmcontrol.steering"
register_control("system", lazy(_S, "system_from_spec"), "prompting: a system message, system[:TEXT]")
register_control("best-of", lazy(_S, "best_of_from_spec"), "best-of-N by a reward, best-of:N,reward=hh")
