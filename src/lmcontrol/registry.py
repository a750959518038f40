"""Plug-in registry: method packages register their controls, benchmark suites and trainers here.

A method package ``lmcontrol/<method>/`` ships a light ``plugin.py`` (no heavy imports at module level) that
calls ``register_control`` / ``register_suite`` / ``register_trainer``. ``discover()`` imports every such
``plugin`` module, so adding a method never edits a central list.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

import lmcontrol
from lmcontrol import LMControlError


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    help: str


_CONTROLS: dict[str, Entry] = {}
_SUITES: dict[str, Entry] = {}
_TRAINERS: dict[str, Entry] = {}
_COMMANDS: dict[str, Entry] = {}
_DEMOS: dict[str, Entry] = {}
_discovered = False


def register_control(kind: str, factory: Callable[..., Any], help: str = "") -> None:
    """``factory(spec: ControlSpec, lm: LanguageModel) -> Control`` builds the control for ``--control kind:…``."""
    _CONTROLS[kind] = Entry(kind, factory, help)


def register_suite(name: str, factory: Callable[..., Any], help: str = "") -> None:
    """``factory() -> BenchSuite`` for ``lmcontrol bench name``."""
    _SUITES[name] = Entry(name, factory, help)


def register_trainer(name: str, factory: Callable[..., Any], help: str = "") -> None:
    """``factory() -> typer.Typer | Callable`` added as ``lmcontrol train name``."""
    _TRAINERS[name] = Entry(name, factory, help)


def register_command(name: str, factory: Callable[..., Any], help: str = "") -> None:
    """``factory() -> Callable`` added as a top-level ``lmcontrol name`` command (e.g. ``compress``)."""
    _COMMANDS[name] = Entry(name, factory, help)


def register_demo(name: str, factory: Callable[..., Any], help: str = "") -> None:
    """``factory(lm, console, max_new_tokens)`` prints one section of ``lmcontrol demo`` / ``make demo``."""
    _DEMOS[name] = Entry(name, factory, help)


def discover() -> None:
    """Import ``lmcontrol.<pkg>.plugin`` for every sub-package that has one (once per process)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for mod in pkgutil.iter_modules(lmcontrol.__path__):
        if not mod.ispkg:
            continue
        name = f"lmcontrol.{mod.name}.plugin"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


def _get(table: dict[str, Entry], what: str, name: str) -> Entry:
    discover()
    if name not in table:
        known = ", ".join(sorted(table)) or "none"
        raise LMControlError(f"unknown {what} '{name}' (known: {known})")
    return table[name]


def control_entry(kind: str) -> Entry:
    return _get(_CONTROLS, "control kind", kind)


def suite_entry(name: str) -> Entry:
    return _get(_SUITES, "benchmark suite", name)


def controls() -> dict[str, Entry]:
    discover()
    return dict(_CONTROLS)


def suites() -> dict[str, Entry]:
    discover()
    return dict(_SUITES)


def trainers() -> dict[str, Entry]:
    discover()
    return dict(_TRAINERS)


def commands() -> dict[str, Entry]:
    discover()
    return dict(_COMMANDS)


def demos() -> dict[str, Entry]:
    discover()
    return dict(_DEMOS)
