"""TEMPORARY: a fake of the lmcontrol.engine contract for developing the server before the engine lands."""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import sys
import threading
import time
import types
import uuid
from typing import Any

from lmcontrol import LMControlError


class QueueFull(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise LMControlError("max_new_tokens must be >= 1")


@dataclasses.dataclass
class Request:
    prompt: str | None = None
    messages: list | None = None
    params: SamplingParams = SamplingParams()
    controls: Any = ()
    chat: bool = True
    system: str | None = None
    meta: dict = dataclasses.field(default_factory=dict)
    stream: bool = False
    on_token: Any = None
    timeout: float | None = None
    request_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)


@dataclasses.dataclass
class TokenEvent:
    request_id: str
    text: str
    token_id: int | None
    finished: bool
    finish_reason: str | None


@dataclasses.dataclass
class RequestOutput:
    request_id: str
    text: str
    token_ids: list
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    first_token_seconds: float
    candidates: list | None = None
    error: str | None = None


class RequestHandle:
    def __init__(self, rid):
        self.request_id = rid
        self._q: queue.Queue = queue.Queue()
        self._done = threading.Event()
        self._out = None
        self.cancelled = False

    def cancel(self):
        self.cancelled = True

    def done(self):
        return self._done.is_set()

    def result(self, timeout=None):
        self._done.wait(timeout)
        return self._out

    def events(self, timeout=None):
        while True:
            ev = self._q.get(timeout=timeout)
            yield ev
            if ev.finished:
                return

    async def aresult(self):
        return await asyncio.to_thread(self.result)

    async def aevents(self):
        while True:
            ev = await asyncio.to_thread(self._q.get)
            yield ev
            if ev.finished:
                return


class Engine:
    def __init__(self, lm, *, max_batch_size=16, max_queue=256):
        self.lm = lm
        self.max_queue = max_queue
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = None
        self.finished = 0

    def submit(self, request):
        if request.prompt is None and request.messages is None:
            raise LMControlError("a request needs a prompt or messages")
        if self._q.qsize() >= self.max_queue:
            raise QueueFull()
        h = RequestHandle(request.request_id)
        self._q.put((request, h, time.perf_counter()))
        return h

    def start(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join()

    def stats(self):
        return {"queue_depth": self._q.qsize(), "running": 0, "batch_size": 1, "requests_finished": self.finished}

    def _loop(self):
        while not self._stop.is_set():
            try:
                item = self._q.get(timeout=0.05)
            except queue.Empty:
                continue
            self._run(*item)

    def _run(self, req, h, t0):
        from lmcontrol.generation import GenerationConfig, generate

        lm = self.lm
        if req.messages is not None:
            text = lm.tokenizer.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=False)
        else:
            text = req.prompt if not req.chat else lm.format_prompt(req.prompt)
        p = req.params
        cfg = GenerationConfig(max_new_tokens=p.max_new_tokens, temperature=p.temperature, top_k=p.top_k,
                               top_p=p.top_p, seed=p.seed, stop=p.stop, chat=False)
        out = generate(lm, [text], cfg, list(req.controls))
        ids = out.token_ids[0]
        sent, first = "", None
        reason = "length" if len(ids) >= p.max_new_tokens else "stop"
        for i in range(len(ids)):
            if h.cancelled:
                reason = "cancelled"
                break
            time.sleep(0.002)
            full = lm.tokenizer.decode(ids[: i + 1], skip_special_tokens=True)
            delta, sent = full[len(sent):], full
            first = first or time.perf_counter() - t0
            h._q.put(TokenEvent(req.request_id, delta, ids[i], False, None))
        final = out.texts[0] if reason != "cancelled" else sent
        h._out = RequestOutput(req.request_id, final, ids, reason, len(lm.tokenizer(text)["input_ids"]), len(ids),
                               time.perf_counter() - t0, first or 0.0)
        h._done.set()
        self.finished += 1
        h._q.put(TokenEvent(req.request_id, "", None, True, reason))


def install() -> None:
    """Make ``import lmcontrol.engine`` give this fake (only when the real one is missing)."""
    try:
        from lmcontrol.engine import Engine as _E  # noqa: F401
    except ImportError:
        mod = types.ModuleType("lmcontrol.engine")
        for name in ("QueueFull", "SamplingParams", "Request", "TokenEvent", "RequestOutput", "RequestHandle",
                     "Engine"):
            setattr(mod, name, globals()[name])
        sys.modules["lmcontrol.engine"] = mod
