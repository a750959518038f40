"""A request and everything that belongs to it: prompt, sampling settings, controls, stream, result.

All per-request state lives here (vLLM's ``Request``): the engine never stores request state on a control, so
controls are shared read-only between strangers in one batch. A ``RequestHandle`` is what ``Engine.submit``
returns: a thread-safe stream of ``TokenEvent`` (blocking or asyncio) and the final ``RequestOutput``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from lmcontrol import LMControlError
from lmcontrol.engine.params import SamplingParams

if TYPE_CHECKING:
    from lmcontrol.controls import Control


class QueueFull(LMControlError):
    """The engine's waiting queue is full: retry later (the server answers 429)."""


@dataclasses.dataclass
class TokenEvent:
    """One streamed piece of a request's text. ``text`` may be "" while a character is incomplete."""

    request_id: str
    text: str
    token_id: int | None
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "timeout" | "error"


@dataclasses.dataclass
class RequestOutput:
    """The finished request: its text and ids (cut at EOS / stop string), why it ended, and its timing."""

    request_id: str
    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int  # tokens generated over all rows of the request (best-of-N candidates included)
    seconds: float  # submit -> finished
    first_token_seconds: float  # submit -> first token (time to first token)
    candidates: list[str] | None = None  # best-of-N: every candidate
    candidate_ids: list[list[int]] | None = None
    error: str | None = None


@dataclasses.dataclass
class Request:
    """What to generate and how. Give ``prompt`` (one user turn) or ``messages`` (a whole chat).

    Attributes:
        prompt: the user prompt; wrapped in the model's chat template unless ``chat`` is False.
        messages: a chat, ``[{"role": "system"|"user"|"assistant", "content": str}, ...]`` (chat template only).
        params: sampling settings of this request.
        controls: controls for this request only (built once, shared read-only by every request carrying them).
        chat: wrap in the chat template (a control trained on raw text turns it off for its request).
        system: a system message (joined with the controls' system prompts).
        meta: per-row fields handed to controls, e.g. ``{"prefix": "e2e"}`` for a prefix library.
        stream: produce ``TokenEvent``s as tokens arrive (``on_token`` implies it).
        on_token: called from the engine thread with each event.
        timeout: seconds from submission; the request then ends with finish_reason "timeout".
    """

    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    params: SamplingParams = dataclasses.field(default_factory=SamplingParams)
    controls: Sequence[Control] = ()
    chat: bool = True
    system: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    stream: bool = False
    on_token: Callable[[TokenEvent], None] | None = None
    timeout: float | None = None
    request_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)

    def validate(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise LMControlError("give exactly one of prompt or messages")
        if self.prompt is not None and (not isinstance(self.prompt, str) or not self.prompt.strip()):
            raise LMControlError("the prompt is empty")
        if self.messages is not None:
            if not self.messages:
                raise LMControlError("messages is empty")
            for m in self.messages:
                if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
                    raise LMControlError("each message needs a role of system, user or assistant")
                if not isinstance(m.get("content"), str):
                    raise LMControlError("each message needs a string content")
        if not isinstance(self.params, SamplingParams):
            raise LMControlError("params must be a SamplingParams")
        if self.timeout is not None and not self.timeout > 0:
            raise LMControlError(f"timeout must be > 0 seconds, got {self.timeout}")
        if not isinstance(self.meta, dict):
            raise LMControlError("meta must be a dict")


class RequestHandle:
    """The caller's side of a submitted request: stream events, wait for the result, or cancel."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.submitted = time.perf_counter()
        self._cond = threading.Condition()
        self._events: list[TokenEvent] = []
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._output: RequestOutput | None = None
        self._cancelled = threading.Event()

    # -- engine side -----------------------------------------------------------------------------------
    def _push(self, event: TokenEvent) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()
            waiters = list(self._waiters)
        for loop, flag in waiters:
            loop.call_soon_threadsafe(flag.set)

    def _finish(self, output: RequestOutput) -> None:
        with self._cond:
            self._output = output
        self._push(TokenEvent(output.request_id, "", None, True, output.finish_reason))

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    # -- caller side -----------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the engine to drop this request; its row leaves the batch at the next step boundary."""
        self._cancelled.set()

    def done(self) -> bool:
        return self._output is not None

    def result(self, timeout: float | None = None) -> RequestOutput:
        """Block until the request is finished (raises TimeoutError after ``timeout`` seconds)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._output is not None, timeout):
                raise TimeoutError(f"request {self.request_id} not finished after {timeout} s")
            assert self._output is not None
            return self._output

    def events(self, timeout: float | None = None) -> Iterator[TokenEvent]:
        """Blocking iterator over the request's events; ends after the finishing event."""
        i = 0
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda i=i: i < len(self._events), timeout):
                    raise TimeoutError(f"request {self.request_id}: no event for {timeout} s")
                batch = self._events[i:]
                i = len(self._events)
            for event in batch:
                yield event
                if event.finished:
                    return

    async def aevents(self) -> AsyncIterator[TokenEvent]:
        """The same stream for asyncio code (FastAPI): waits without blocking the event loop."""
        loop = asyncio.get_running_loop()
        flag = asyncio.Event()
        with self._cond:
            self._waiters.append((loop, flag))
        i = 0
        try:
            while True:
                flag.clear()
                with self._cond:
                    batch = self._events[i:]
                    i = len(self._events)
                if not batch:
                    await flag.wait()
                    continue
                for event in batch:
                    yield event
                    if event.finished:
                        return
        finally:
            with self._cond:
                self._waiters.remove((loop, flag))

    async def aresult(self) -> RequestOutput:
        """Await the final output without blocking the event loop."""
        loop = asyncio.get_running_loop()
        flag = asyncio.Event()
        with self._cond:
            self._waiters.append((loop, flag))
        try:
            while True:
                flag.clear()
                if self._output is not None:
                    return self._output
                await flag.wait()
        finally:
            with self._cond:
                self._waiters.remove((loop, flag))
