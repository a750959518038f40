"""From an OpenAI request to engine requests and back: one engine ``Request`` per choice (prompt x n).

The flow of a served request (docs/serving.md): pydantic body -> ``plan()`` resolves the model name and the
controls (built once, cached) and checks the limits -> ``submit()`` hands every choice to the engine (a full
queue answers 429 and withdraws the choices already queued) -> ``events()`` merges the choices' token streams
-> either ``collect()`` (one JSON response) or the SSE generators in ``app.py``.

Stop strings: streamed text is held back while its tail could still grow into a stop string, and the final
text comes from the engine's result, so a client never sees a stop string or text after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from lmcontrol import LMControlError
from lmcontrol.engine import QueueFull, Request, SamplingParams
from lmcontrol.serve.errors import APIError
from lmcontrol.serve.schemas import ChatCompletionRequest, CompletionRequest

if TYPE_CHECKING:
    from lmcontrol.controls import Control
    from lmcontrol.engine import Engine, RequestHandle, RequestOutput, TokenEvent
    from lmcontrol.serve.config import ServeSettings
    from lmcontrol.serve.controls import ControlStore

MAX_STOPS = 4


@dataclasses.dataclass
class Choice:
    """One engine request: choice ``index`` of the response, answering prompt ``prompt_index``."""

    index: int
    prompt_index: int
    request: Request
    handle: RequestHandle | None = None
    sent: str = ""  # text already streamed to the client
    pending: str = ""  # text held back (it may be the start of a stop string)
    first_token_at: float | None = None


@dataclasses.dataclass
class Plan:
    model: str  # the model name the client sent (echoed in responses)
    choices: list[Choice]
    stream: bool
    include_usage: bool
    arrived: float  # time.perf_counter() when the request arrived
    submitted: float = 0.0  # time.perf_counter() when the engine accepted it


def resolve_model(name: str, store: ControlStore, settings: ServeSettings, base_names: set[str]) -> list[Control]:
    """Controls implied by ``model``: none for the base model, the loaded control for ``MODEL:NAME`` / ``NAME``."""
    if name in base_names:
        return []
    base, sep, artifact = name.partition(":")
    key = artifact if sep and base in base_names else name
    loaded = store.get(key)
    if loaded is None:
        known = ", ".join(sorted(base_names | {f"{settings.model_name}:{c.name}" for c in store.loaded()}))
        raise APIError(404, f"the model '{name}' does not exist (served: {known})", param="model",
                       code="model_not_found")
    return [loaded.control]


def resolve_controls(body: CompletionRequest | ChatCompletionRequest, store: ControlStore,
                     settings: ServeSettings, base_names: set[str]) -> list[Control]:
    """The model's control (if it names an artifact) then each entry of ``controls``, built or from the cache."""
    if len(body.controls) > settings.max_controls:
        raise APIError(400, f"at most {settings.max_controls} controls per request, got {len(body.controls)}",
                       param="controls")
    controls = resolve_model(body.model, store, settings, base_names)
    if len(controls) + len(body.controls) > settings.max_controls:
        raise APIError(400, f"at most {settings.max_controls} controls per request (the model '{body.model}' "
                       "counts as one)", param="controls")
    for entry in body.controls:
        if not settings.allow_request_controls and not entry.strip().startswith("@"):
            raise APIError(403, "this server accepts only loaded controls (@NAME) in 'controls'",
                           param="controls")
        controls.append(store.resolve(entry))
    return controls


def _check(body: CompletionRequest | ChatCompletionRequest, settings: ServeSettings) -> int:
    bad = body.unsupported()
    if bad:
        raise APIError(400, f"not supported by lmcontrol: {', '.join(bad)}", param=bad[0].split()[0])
    default = min(settings.default_max_tokens, settings.max_tokens)
    max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens or default
    if max_tokens > settings.max_tokens:
        raise APIError(400, f"max_tokens must be <= {settings.max_tokens}, got {max_tokens}", param="max_tokens")
    if body.n > settings.max_n:
        raise APIError(400, f"n must be <= {settings.max_n}, got {body.n}", param="n")
    stops = body.stops()
    if len(stops) > MAX_STOPS or any(not s for s in stops):
        raise APIError(400, f"stop takes 1 to {MAX_STOPS} non-empty strings", param="stop")
    return max_tokens


def _params(body: CompletionRequest | ChatCompletionRequest, max_tokens: int, i: int) -> SamplingParams:
    seed = None if body.seed is None else (body.seed + i) % (2**63 - 1)  # choice i of n gets its own stream
    try:
        return SamplingParams(max_new_tokens=max_tokens, temperature=body.temperature, top_k=max(body.top_k, 0),
                              top_p=body.top_p, seed=seed, stop=body.stops())
    except (LMControlError, ValueError) as e:
        raise APIError(400, str(e)) from None


def _count_tokens(lm: Any, text: str | None = None, messages: list[dict[str, str]] | None = None) -> int:
    tok = lm.tokenizer
    if messages is not None:
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = "\n".join(m["content"] for m in messages)
    return len(tok(text or "", add_special_tokens=False)["input_ids"])


def _check_length(n_chars: int, n_tokens_fn: Any, settings: ServeSettings) -> None:
    if n_chars > settings.max_prompt_chars:
        raise APIError(400, f"the prompt has {n_chars} characters; the limit is {settings.max_prompt_chars}",
                       param="prompt")
    n_tokens = n_tokens_fn()
    if n_tokens > settings.max_prompt_tokens:
        raise APIError(400, f"the prompt has {n_tokens} tokens; the limit is {settings.max_prompt_tokens}",
                       param="prompt", code="context_length_exceeded")


def plan_completion(body: CompletionRequest, controls: list[Control], lm: Any, settings: ServeSettings) -> Plan:
    """One raw-text request (no chat template) per prompt x n."""
    max_tokens = _check(body, settings)
    prompts = body.prompts()
    if not prompts or len(prompts) > settings.max_prompts:
        raise APIError(400, f"prompt must hold 1 to {settings.max_prompts} prompts", param="prompt")
    for p in prompts:
        _check_length(len(p), lambda p=p: _count_tokens(lm, text=p), settings)
    choices = []
    for p_i, prompt in enumerate(prompts):
        for j in range(body.n):
            req = Request(prompt=prompt, params=_params(body, max_tokens, j), controls=tuple(controls), chat=False,
                          meta=dict(body.meta), stream=body.stream, timeout=settings.request_timeout)
            choices.append(Choice(index=len(choices), prompt_index=p_i, request=req))
    include = bool(body.stream_options and body.stream_options.include_usage)
    return Plan(body.model, choices, body.stream, include, time.perf_counter())


def plan_chat(body: ChatCompletionRequest, controls: list[Control], lm: Any, settings: ServeSettings) -> Plan:
    """One chat request per choice (``n``); ``developer`` messages are system messages."""
    max_tokens = _check(body, settings)
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    _check_length(sum(len(m["content"]) for m in messages), lambda: _count_tokens(lm, messages=messages), settings)
    choices = []
    for j in range(body.n):
        req = Request(messages=[dict(m) for m in messages], params=_params(body, max_tokens, j),
                      controls=tuple(controls), chat=True, meta=dict(body.meta), stream=body.stream,
                      timeout=settings.request_timeout)
        choices.append(Choice(index=j, prompt_index=0, request=req))
    include = bool(body.stream_options and body.stream_options.include_usage)
    return Plan(body.model, choices, body.stream, include, time.perf_counter())


def submit(engine: Engine, plan: Plan, settings: ServeSettings) -> None:
    """Queue every choice; on a full queue withdraw the ones queued and answer 429 with Retry-After."""
    try:
        for c in plan.choices:
            c.handle = engine.submit(c.request)
        plan.submitted = time.perf_counter()
    except QueueFull:
        cancel(plan)
        raise APIError(429, "the server is busy (request queue full); retry later", code="queue_full",
                       headers={"Retry-After": str(settings.retry_after)}) from None
    except (LMControlError, ValueError) as e:
        cancel(plan)
        raise APIError(400, str(e)) from None


def cancel(plan: Plan) -> None:
    """Free the rows of every unfinished choice (client gone, error, or a sibling refused)."""
    for c in plan.choices:
        if c.handle is not None and not c.handle.done():
            c.handle.cancel()


async def events(plan: Plan) -> AsyncIterator[tuple[Choice, TokenEvent]]:
    """The token events of all choices, merged in arrival order (streaming requests only)."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(c: Choice) -> None:
        try:
            async for ev in c.handle.aevents():  # type: ignore[union-attr]
                await queue.put((c, ev, None))
        except Exception as e:  # noqa: BLE001 - reported to the consumer below
            await queue.put((c, None, e))
        finally:
            await queue.put((c, None, None))

    tasks = [asyncio.create_task(pump(c)) for c in plan.choices]
    try:
        remaining = len(tasks)
        while remaining:
            c, ev, err = await queue.get()
            if err is not None:
                raise err
            if ev is None:
                remaining -= 1
                continue
            if c.first_token_at is None and (ev.text or ev.token_id is not None):
                c.first_token_at = time.perf_counter()
            yield c, ev
    finally:
        for t in tasks:
            t.cancel()


def hold_back(c: Choice, text: str, stops: tuple[str, ...]) -> str:
    """Add ``text`` to the choice's held text; return what can be sent now (nothing that may start a stop)."""
    c.pending += text
    if not stops:
        out, c.pending = c.pending, ""
        return out
    whole = c.sent + c.pending
    if any(s in whole for s in stops):  # a stop string is complete: never send it (the final text decides what remains)
        c.pending = whole[len(c.sent):]
        return ""
    keep = 0
    for s in stops:  # the longest tail of the text that is a proper prefix of a stop string
        for k in range(min(len(s) - 1, len(c.pending)), 0, -1):
            if c.pending.endswith(s[:k]):
                keep = max(keep, k)
                break
    out = c.pending[: len(c.pending) - keep]
    c.pending = c.pending[len(c.pending) - keep:]
    return out


def final_delta(c: Choice, output: RequestOutput) -> str:
    """The rest of the final text after what was streamed (the result is authoritative)."""
    c.pending = ""
    if output.text.startswith(c.sent):
        return output.text[len(c.sent):]
    return ""  # the engine's final text disagrees with the streamed prefix (should not happen): send nothing


def check_outputs(outputs: list[RequestOutput], settings: ServeSettings) -> None:
    """Engine-side failures as HTTP errors: a timeout is 408, an internal error 500."""
    for out in outputs:
        if out.finish_reason == "timeout":
            raise APIError(408, f"the request did not finish within {settings.request_timeout:g} s",
                           code="timeout")
        if out.finish_reason == "error":
            raise APIError(500, f"generation failed: {out.error or 'unknown error'}")
        if out.finish_reason == "cancelled":
            raise APIError(499, "the request was cancelled")


def usage(plan: Plan, outputs: list[RequestOutput]) -> dict[str, int]:
    """Prompt tokens counted once per prompt, completion tokens over every choice."""
    prompt_tokens: dict[int, int] = {}
    for c, out in zip(plan.choices, outputs, strict=True):
        prompt_tokens.setdefault(c.prompt_index, out.prompt_tokens)
    p = sum(prompt_tokens.values())
    n = sum(out.completion_tokens for out in outputs)
    return {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}


async def results(plan: Plan) -> list[RequestOutput]:
    """Every choice's final output, awaited without blocking the event loop."""
    outputs = await asyncio.gather(*(c.handle.aresult() for c in plan.choices))  # type: ignore[union-attr]
    for c, out in zip(plan.choices, outputs, strict=True):
        if c.first_token_at is None and out.completion_tokens:
            c.first_token_at = plan.submitted + out.first_token_seconds
    return list(outputs)
