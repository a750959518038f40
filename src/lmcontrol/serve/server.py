"""Build a server from command-line settings and run it: model -> engine -> loaded controls -> app -> uvicorn.

``build(config)`` is shared by ``lmcontrol serve``, the Ray Serve deployment (one per replica) and the serve
benchmark, so every way of serving builds the same thing.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmcontrol import LMControlError
from lmcontrol.serve.config import ServeSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from lmcontrol.engine import Engine
    from lmcontrol.serve.controls import ControlStore

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """What ``lmcontrol serve`` builds.

    Args:
        model: HF id or local path (None = the embedded SmolLM2-135M-Instruct).
        controls: ``(NAME, SPEC)`` controls loaded at start-up (trusted: operator input).
        max_batch_size: rows the engine runs per step.
        max_queue: waiting requests before new ones get 429.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
        weights: ``dense`` or ``fp16-packed`` (CPU only: ``lmcontrol.fp16_weights``).
        settings: the HTTP layer's names and limits.
    """

    model: str | None = None
    controls: tuple[tuple[str, str], ...] = ()
    max_batch_size: int = 16
    max_queue: int = 256
    device: str = "auto"
    weights: str = "dense"
    settings: ServeSettings = ServeSettings()

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise LMControlError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        from lmcontrol.models import WEIGHT_FORMATS

        if self.weights not in WEIGHT_FORMATS:
            raise LMControlError(f"--weights must be dense or fp16-packed, got {self.weights!r}")
        if self.max_batch_size < 1 or self.max_queue < 1:
            raise LMControlError("--max-batch-size and --max-queue must be >= 1")
        names = [n for n, _ in self.controls]
        if len(set(names)) != len(names):
            raise LMControlError(f"--control names must be unique, got {names}")


def parse_named_controls(items: list[str]) -> tuple[tuple[str, str], ...]:
    """``NAME=SPEC`` pairs from ``--control`` (a bare ``kind:DIR`` is named after DIR's last part)."""
    out = []
    for item in items:
        name, eq, spec = item.partition("=")
        if eq and ":" not in name and name.strip():
            out.append((name.strip(), spec.strip()))
            continue
        kind, _, rest = item.partition(":")
        first = rest.split(",")[0].strip()
        out.append((Path(first).name if first else kind.strip(), item.strip()))
    for name, spec in out:
        if not spec:
            raise LMControlError(f"--control {name}=: empty spec")
    return tuple(out)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise LMControlError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return device


def build(config: ServerConfig) -> tuple[Engine, ControlStore]:
    """Load the model onto the device, make the engine and load the named controls (not started)."""
    from lmcontrol.engine import Engine
    from lmcontrol.models import load_lm
    from lmcontrol.serve.controls import ControlStore

    device = resolve_device(config.device)
    if config.weights == "fp16-packed" and device != "cpu":
        raise LMControlError("--weights fp16-packed is a CPU format; on a GPU serve the dense model")
    lm = load_lm(config.model, weights=config.weights)
    if next(lm.model.parameters()).device.type != device:
        lm.model.to(device)
    engine = Engine(lm, max_batch_size=config.max_batch_size, max_queue=config.max_queue)
    store = ControlStore(lm, roots=config.settings.control_roots, cache_size=config.settings.control_cache_size)
    for name, spec in config.controls:
        store.load(name, spec, trusted=True)
    return engine, store


def build_app(config: ServerConfig) -> FastAPI:
    from lmcontrol.serve.app import create_app

    engine, store = build(config)
    return create_app(engine, store, config.settings)


def run(config: ServerConfig, host: str, port: int, log_level: str = "info") -> None:
    """Serve until interrupted (uvicorn, one process; the engine batches the concurrent requests)."""
    import uvicorn

    app = build_app(config)
    log.info("serving %s on http://%s:%d", config.settings.model_name, host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


def uvicorn_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> tuple[Any, Any, int]:
    """Start uvicorn on a background thread; returns (server, thread, port). Stop: ``server.should_exit = True``."""
    import socket
    import threading
    import time

    import uvicorn

    if port == 0:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise LMControlError(f"the server did not start on {host}:{port}")
        time.sleep(0.05)
    return server, thread, port
