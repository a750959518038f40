"""Controls for a server: loaded artifacts by name, and a cache of controls built from request specs.

A control is built once (``lmcontrol.controls.build_control``, which may read weights from disk) and then
shared read-only by every request that names it: the engine keeps per-request state in the request, never
on the control. Two ways to reach one:

- **loaded** (``--control NAME=SPEC`` at start-up, or ``POST /v1/controls/load``): served as the model
  ``MODEL:NAME`` and usable in a request's ``controls`` as ``@NAME``; ``@NAME,key=value`` builds (and caches)
  the loaded spec with those options appended, e.g. a steering control at another scale;
- **request specs** (``controls: ["kind:args,..."]``): parsed by the same grammar as ``--control`` and cached
  per spec string (least recently used dropped past ``control_cache_size``).

Request specs are untrusted: ``check_request_spec`` refuses any value that names code to import
(``py:module:function``, e.g. ``best-of:4,reward=py:evil:fn``) and any value naming a file outside the
configured roots. Specs given on the command line are trusted (the operator typed them).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from lmcontrol import LMControlError
from lmcontrol.controls import ControlSpec, build_control, parse_control_spec

if TYPE_CHECKING:
    from lmcontrol.controls import Control
    from lmcontrol.models import LanguageModel

log = logging.getLogger(__name__)

CODE_PREFIXES = ("py:",)  # values that would make lmcontrol import code named by the request


@dataclasses.dataclass(frozen=True)
class LoadedControl:
    name: str
    spec: ControlSpec
    control: Control


def check_request_spec(spec: ControlSpec, roots: tuple[Path, ...]) -> None:
    """Refuse a spec from a request that would import code or read files outside ``roots``."""
    values = [*spec.args, *(v for _, v in spec.options)]
    for value in values:
        text = value.strip()
        if any(text.lower().startswith(p) for p in CODE_PREFIXES):
            raise LMControlError(
                f"control '{spec.text}': '{text}' imports code named by the request, which the server refuses "
                "(load such a control at start-up with `lmcontrol serve --control NAME=SPEC`)"
            )
        for candidate in {text, text.removeprefix("hf:")}:
            if _names_outside(candidate, roots):
                raise LMControlError(
                    f"control '{spec.text}': '{text}' is outside the directories the server reads controls from"
                )


def _names_outside(value: str, roots: tuple[Path, ...]) -> bool:
    if not value or len(value) > 1024 or "\x00" in value:
        return False
    try:
        path = Path(value).expanduser()
        if not path.exists():
            return False
        resolved = path.resolve()
    except (OSError, ValueError, RuntimeError):
        return False
    return not any(resolved.is_relative_to(Path(root).resolve()) for root in roots)


def with_options(spec: ControlSpec, options: str) -> str:
    """``spec`` with ``key=value,...`` appended (later options win over earlier ones)."""
    if not options.strip():
        return spec.text
    sep = "," if ":" in spec.text else ":"
    return f"{spec.text}{sep}{options.strip()}"


class ControlStore:
    """Thread-safe: the loaded controls by name and the built-control cache by spec string."""

    def __init__(self, lm: LanguageModel, *, roots: tuple[Path, ...] = (), cache_size: int = 16) -> None:
        self.lm = lm
        self.roots = tuple(roots)
        self.cache_size = cache_size
        self._loaded: dict[str, LoadedControl] = {}
        self._cache: collections.OrderedDict[str, Control] = collections.OrderedDict()
        self._lock = threading.RLock()

    # ---- loaded artifacts
    def load(self, name: str, spec: str, *, trusted: bool = False) -> LoadedControl:
        """Build ``spec`` and serve it as ``name``; loading the same spec again is a no-op."""
        parsed = parse_control_spec(spec)
        with self._lock:
            old = self._loaded.get(name)
            if old is not None:
                if old.spec.text == parsed.text:
                    return old
                raise LMControlError(f"control '{name}' is already loaded with '{old.spec.text}'; unload it first")
        control = self._build(parsed, trusted=trusted)
        with self._lock:
            loaded = self._loaded.setdefault(name, LoadedControl(name, parsed, control))
        log.info("loaded control %s = %s", name, parsed.text)
        return loaded

    def add(self, name: str, control: Control, spec: str | None = None) -> LoadedControl:
        """Serve a control built in Python (no spec to parse); ``spec`` only labels it in listings."""
        parsed = parse_control_spec(spec or getattr(control, "name", None) or "control")
        with self._lock:
            if name in self._loaded:
                raise LMControlError(f"control '{name}' is already loaded; unload it first")
            self._loaded[name] = LoadedControl(name, parsed, control)
            return self._loaded[name]

    def unload(self, name: str) -> bool:
        """Forget ``name`` (requests already running keep their reference). False if it was not loaded."""
        with self._lock:
            gone = self._loaded.pop(name, None)
        return gone is not None

    def loaded(self) -> list[LoadedControl]:
        with self._lock:
            return list(self._loaded.values())

    def get(self, name: str) -> LoadedControl | None:
        with self._lock:
            return self._loaded.get(name)

    # ---- request specs
    def resolve(self, entry: str) -> Control:
        """The control for one entry of a request's ``controls``: ``@NAME[,options]`` or a spec string."""
        entry = entry.strip()
        if entry.startswith("@"):
            name, _, options = entry[1:].partition(",")
            loaded = self.get(name.strip())
            if loaded is None:
                known = ", ".join(sorted(c.name for c in self.loaded())) or "none"
                raise LMControlError(f"no loaded control '{name.strip()}' (loaded: {known})")
            if not options.strip():
                return loaded.control
            extra = parse_control_spec(f"{loaded.spec.kind}:{options}")
            check_request_spec(extra, self.roots)  # the operator's spec is trusted, the added options are not
            return self._cached(parse_control_spec(with_options(loaded.spec, options)), trusted=True)
        return self._cached(parse_control_spec(entry), trusted=False)

    def _cached(self, spec: ControlSpec, *, trusted: bool) -> Control:
        if not trusted:
            check_request_spec(spec, self.roots)
        with self._lock:
            hit = self._cache.get(spec.text)
            if hit is not None:
                self._cache.move_to_end(spec.text)
                return hit
        control = self._build(spec, trusted=trusted)
        with self._lock:
            self._cache[spec.text] = control
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return control

    def _build(self, spec: ControlSpec, *, trusted: bool) -> Control:
        if not trusted:
            check_request_spec(spec, self.roots)
        try:
            return build_control(spec, self.lm)
        except LMControlError:
            raise
        except Exception as e:  # a spec naming a broken or foreign artifact is the client's error, not ours
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise LMControlError(f"control '{spec.text}' could not be built ({type(e).__name__}: {first})") from e
