"""One registry mechanism for everything a method or a separately installed package can add.

Tables (each a ``Registry``): ``--control`` kinds, ``lmcontrol bench`` suites, ``lmcontrol train`` trainers,
top-level commands, ``lmcontrol demo`` sections, ``lmcontrol eval`` metrics and reward functions.

Where entries come from (``discover()``, once per process, before any lookup):

1. ``lmcontrol.<pkg>.plugin`` for every sub-package that has one, and the spine's ``SPINE_PLUGINS``;
2. Python entry points in the group ``lmcontrol.plugins``, so a separately installed package adds a method
   without editing lmcontrol. In its ``pyproject.toml``::

       [project.entry-points."lmcontrol.plugins"]
       mymethod = "mymethod.plugin"            # a module whose import calls register_*
       # or "mymethod.plugin:register"         # a function, called with no arguments

A plugin module stays light (no torch at import): it passes ``lazy("pkg.module", "attr")`` factories. A name
registered twice with a different factory raises ``LMControlError`` naming both (a second registration never
silently wins); the same factory registering again (a re-imported module) is a no-op.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import logging
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any

import lmcontrol
from lmcontrol import LMControlError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "lmcontrol.plugins"
SPINE_PLUGINS = ("lmcontrol.steering_plugin",)  # spine modules (not sub-packages) that register entries


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered name: its factory, one line of help, and table-specific fields (e.g. a metric's needs)."""

    name: str
    factory: Callable[..., Any]
    help: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = ""  # the module that registered it (shown in duplicate errors)


@dataclasses.dataclass(frozen=True)
class LazyFactory:
    """Imports ``module`` only when called and forwards to its ``attr`` (keeps plugins light). Two lazy
    factories naming the same target are equal, so a re-imported plugin re-registers without error."""

    module: str
    attr: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.attr)(*args, **kwargs)

    def resolve(self) -> Any:
        return getattr(importlib.import_module(self.module), self.attr)


def lazy(module: str, attr: str) -> LazyFactory:
    """A factory that imports ``module`` only when called and forwards to its ``attr``."""
    return LazyFactory(module, attr)


def _same_factory(a: Any, b: Any) -> bool:
    if a is b or a == b:
        return True
    # the same top-level function from a re-executed module (closures share a qualname, so they never match)
    qa, qb = getattr(a, "__qualname__", None), getattr(b, "__qualname__", None)
    if qa is None or "<locals>" in qa or "<lambda>" in qa:
        return False
    return qa == qb and getattr(a, "__module__", None) == getattr(b, "__module__", None)


class Registry:
    """A named table of factories. ``what`` names an entry in error messages (e.g. ``"control kind"``)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, Entry] = {}

    def register(
        self, name: str, factory: Callable[..., Any], help: str = "", *, source: str = "", **extra: Any
    ) -> Entry:
        """Add ``name``; a different factory under a taken name raises ``LMControlError``."""
        if not isinstance(name, str) or not name.strip():
            raise LMControlError(f"a {self.what} needs a non-empty name, got {name!r}")
        if not callable(factory):
            raise LMControlError(f"{self.what} '{name}': the factory is not callable")
        source = source or _caller_module()
        old = self._entries.get(name)
        if old is not None:
            if _same_factory(old.factory, factory):
                return old
            raise LMControlError(
                f"{self.what} '{name}' is registered twice: by {old.source or 'unknown'} and by "
                f"{source or 'unknown'} (rename one; a second registration never replaces the first)"
            )
        entry = Entry(name, factory, help, dict(extra), source)
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> Entry:
        """The entry for ``name``; an unknown name raises listing the known ones."""
        discover()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            raise LMControlError(f"unknown {self.what} '{name}' (known: {known})")
        return self._entries[name]

    def entries(self) -> dict[str, Entry]:
        """Every entry (after discovery), in registration order."""
        discover()
        return dict(self._entries)

    def __contains__(self, name: object) -> bool:
        discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries())

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests; a plugin replacing its own entry)."""
        self._entries.pop(name, None)


def _caller_module() -> str:
    """The module that called ``register*`` (for duplicate-name messages)."""
    import sys

    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back  # type: ignore[assignment]
    return frame.f_globals.get("__name__", "") if frame is not None else ""


CONTROLS = Registry("control kind")
SUITES = Registry("benchmark suite")
TRAINERS = Registry("trainer")
COMMANDS = Registry("command")
DEMOS = Registry("demo")
METRICS = Registry("metric")
REWARDS = Registry("reward")
_discovered = False


def register_control(kind: str, factory: Callable[..., Any], help: str = "") -> None:
    """``factory(spec: ControlSpec, lm: LanguageModel) -> Control`` builds the control for ``--control kind:…``."""
    CONTROLS.register(kind, factory, help)


def register_suite(name: str, factory: Callable[..., Any], help: str = "") -> None:
    """``factory() -> BenchSuite`` for ``lmcontrol bench name``."""
    SUITES.register(name, factory, help)


def register_trainer(name: str, factory: Callable[..., Any], help: str = "") -> None:
    """``factory() -> typer.Typer | Callable`` added as ``lmcontrol train name``."""
    TRAINERS.register(name, factory, help)


def register_command(name: str, factory: Callable[..., Any], help: str = "") -> None:
    """``factory() -> Callable`` added as a top-level ``lmcontrol name`` command (e.g. ``compress``)."""
    COMMANDS.register(name, factory, help)


def register_demo(name: str, factory: Callable[..., Any], help: str = "") -> None:
    """``factory(lm, console, max_new_tokens)`` prints one section of ``lmcontrol demo`` / ``make demo``."""
    DEMOS.register(name, factory, help)


def register_reward(name: str, factory: Callable[..., Any], help: str = "") -> None:
    """``factory() -> reward(prompts, responses) -> list[float]`` for ``load_reward(name)`` / ``reward:name``."""
    REWARDS.register(name, factory, help)


def discover(force: bool = False) -> None:
    """Import every plugin (package plugins, spine plugins, then entry points), once per process."""
    global _discovered
    if _discovered and not force:
        return
    _discovered = True
    for mod in pkgutil.iter_modules(lmcontrol.__path__):
        if not mod.ispkg:
            continue
        name = f"lmcontrol.{mod.name}.plugin"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
    for name in SPINE_PLUGINS:
        importlib.import_module(name)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        _load_entry_point(ep)


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> None:
    """Import a third-party plugin; a function target is called with no arguments."""
    import types

    try:
        target = ep.load()
    except Exception as e:  # a broken third-party plugin: say which one, in one line
        raise LMControlError(f"plugin '{ep.name}' ({ep.value}) failed to load: {type(e).__name__}: {e}") from None
    if callable(target) and not isinstance(target, types.ModuleType):
        target()
    log.debug("loaded plugin %s (%s)", ep.name, ep.value)


def control_entry(kind: str) -> Entry:
    return CONTROLS.get(kind)


def suite_entry(name: str) -> Entry:
    return SUITES.get(name)


def controls() -> dict[str, Entry]:
    return CONTROLS.entries()


def suites() -> dict[str, Entry]:
    return SUITES.entries()


def trainers() -> dict[str, Entry]:
    return TRAINERS.entries()


def commands() -> dict[str, Entry]:
    return COMMANDS.entries()


def demos() -> dict[str, Entry]:
    return DEMOS.entries()
