"""The OpenAI-compatible HTTP app: ``create_app(engine, controls, settings) -> FastAPI``.

Routes (docs/serving.md has curl and ``openai``-client examples):

==================================  =======================================================================
``POST /v1/completions``            raw-text continuation; ``stream: true`` answers server-sent events
``POST /v1/chat/completions``       chat; SSE chunks ``data: {...}`` then ``data: [DONE]``
``GET  /v1/models``                 the base model and every loaded control as ``MODEL:NAME``
``GET  /v1/controls``               loaded controls and the registered control kinds (extension)
``POST /v1/controls/load|unload``   build a control once and serve it by name (as vLLM loads adapters)
``POST /v1/score``                  toxicity / sentiment / reward of texts (extension; the playground's scores)
``GET  /healthz``, ``/metrics``     liveness with engine stats; Prometheus text
``GET  /``                          the web playground (static files, no build step)
==================================  =======================================================================

The app is a thin layer over the engine (as vLLM's server is over its engine): it validates, resolves
controls, submits one engine request per choice and relays the token events. A client that disconnects
frees its rows (``handle.cancel()``): streaming responses stop when a send fails or the disconnect arrives,
and non-streaming waits poll for the disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from lmcontrol.serve import completions as cp
from lmcontrol.serve.config import ServeSettings
from lmcontrol.serve.errors import APIError, error_body, error_response, install_error_handlers
from lmcontrol.serve.metrics import ServeMetrics
from lmcontrol.serve.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    ControlInfo,
    ControlList,
    ErrorResponse,
    LoadControlRequest,
    ModelCard,
    ModelList,
    ScoreRequest,
    ScoreResponse,
    UnloadControlRequest,
    new_id,
    now,
)

if TYPE_CHECKING:
    from lmcontrol.engine import Engine
    from lmcontrol.serve.controls import ControlStore

log = logging.getLogger(__name__)

PLAYGROUND = Path(__file__).resolve().parent / "playground"
MAX_BODY_BYTES = 1_000_000
ENDPOINTS = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/controls", "/v1/controls/load",
             "/v1/controls/unload", "/v1/score", "/healthz", "/metrics")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in ((400, "invalid request"), (404, "unknown model"), (408, "timed out"),
                       (429, "queue full (see Retry-After)"))
}


def _sse(payload: Any) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


class _Observe:
    """ASGI middleware: per-endpoint request counts and latency (to the last byte), and a body size cap."""

    def __init__(self, app: Any, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            resp = error_response(413, f"request body over {MAX_BODY_BYTES} bytes")
            return await resp(scope, receive, send)
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        start, status = time.perf_counter(), 500

        async def wrapped(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.metrics.observe_request(endpoint, status, time.perf_counter() - start)

        await self.app(scope, receive, wrapped)


def create_app(engine: Engine, controls: ControlStore, settings: ServeSettings | None = None, *,
               manage_engine: bool = True) -> FastAPI:
    """The FastAPI app over a running (or, with ``manage_engine``, started and stopped here) engine."""
    settings = settings or ServeSettings()
    lm = engine.lm
    base_names = {settings.model_name, lm.info.name}
    metrics = ServeMetrics(engine.stats, lambda: len(controls.loaded()))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_engine:
            engine.start()
        try:
            yield
        finally:
            if manage_engine:
                engine.stop()

    app = FastAPI(title="lmcontrol", version="1", lifespan=lifespan,
                  description="OpenAI-compatible controlled generation (lmcontrol serve).")
    app.state.engine, app.state.controls, app.state.settings, app.state.metrics = engine, controls, settings, metrics
    install_error_handlers(app)
    app.add_middleware(_Observe, metrics=metrics)

    async def _plan(body: CompletionRequest | ChatCompletionRequest) -> cp.Plan:
        built = await asyncio.to_thread(cp.resolve_controls, body, controls, settings, base_names)
        if isinstance(body, ChatCompletionRequest):
            plan = cp.plan_chat(body, built, lm, settings)
        else:
            plan = cp.plan_completion(body, built, lm, settings)
        cp.submit(engine, plan, settings)
        return plan

    async def _watch(request: Request, plan: cp.Plan) -> None:
        while True:
            await asyncio.sleep(0.2)
            if await request.is_disconnected():
                cp.cancel(plan)
                return

    async def _finish(plan: cp.Plan) -> list[Any]:
        outputs = await cp.results(plan)
        for c, out in zip(plan.choices, outputs, strict=True):
            if c.first_token_at is not None:
                metrics.ttft.observe(c.first_token_at - plan.arrived)
            metrics.observe_tokens(out.prompt_tokens, out.completion_tokens)
        return outputs

    async def _wait(request: Request, plan: cp.Plan) -> list[Any]:
        watcher = asyncio.create_task(_watch(request, plan))
        try:
            outputs = await _finish(plan)
        except BaseException:
            cp.cancel(plan)
            raise
        finally:
            watcher.cancel()
        cp.check_outputs(outputs, settings)
        return outputs

    async def _stream(request: Request, plan: cp.Plan, chat: bool) -> AsyncIterator[str]:
        rid, created = new_id("chatcmpl" if chat else "cmpl"), now()
        stops = plan.choices[0].request.params.stop

        def chunk(index: int, text: str | None, reason: str | None = None, role: bool = False) -> dict:
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
                if text is not None and not role:
                    delta["content"] = text
                choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
                return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": plan.model,
                        "choices": [choice]}
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": reason}
            return {"id": rid, "object": "text_completion", "created": created, "model": plan.model,
                    "choices": [choice]}

        watcher = asyncio.create_task(_watch(request, plan))
        try:
            if chat:
                for c in plan.choices:
                    yield _sse(chunk(c.index, None, role=True))
            async for c, ev in cp.events(plan):
                text = cp.hold_back(c, ev.text, stops) if ev.text else ""
                if not ev.finished:
                    if text:
                        c.sent += text
                        yield _sse(chunk(c.index, text))
                    continue
                out = await c.handle.aresult()  # type: ignore[union-attr]
                if out.finish_reason in ("timeout", "error", "cancelled"):
                    message = (f"the request did not finish within {settings.request_timeout:g} s"
                               if out.finish_reason == "timeout" else out.error or out.finish_reason)
                    yield _sse(error_body(408 if out.finish_reason == "timeout" else 500, message))
                    continue
                rest = cp.final_delta(c, out)
                if rest:
                    c.sent += rest
                    yield _sse(chunk(c.index, rest))
                yield _sse(chunk(c.index, None if chat else "", reason=out.finish_reason))
            outputs = await _finish(plan)
            if plan.include_usage:
                body = chunk(0, None)
                body["choices"], body["usage"] = [], cp.usage(plan, outputs)
                yield _sse(body)
            yield _sse("[DONE]")
        except Exception as e:  # the headers are sent: report in the stream, as OpenAI does
            log.exception("stream failed")
            yield _sse(error_body(500, f"internal server error ({type(e).__name__})"))
            yield _sse("[DONE]")
        finally:
            watcher.cancel()
            cp.cancel(plan)  # no-op when every choice finished; frees the rows of a client that left

    @app.post("/v1/completions", response_model=None, responses=ERRORS)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        """OpenAI's legacy completions: ``prompt`` continued as raw text (no chat template)."""
        plan = await _plan(body)
        if plan.stream:
            return StreamingResponse(_stream(request, plan, chat=False), media_type="text/event-stream")
        outputs = await _wait(request, plan)
        choices = [{"index": c.index, "text": o.text, "logprobs": None, "finish_reason": o.finish_reason}
                   for c, o in zip(plan.choices, outputs, strict=True)]
        return JSONResponse({"id": new_id("cmpl"), "object": "text_completion", "created": now(),
                             "model": plan.model, "choices": choices, "usage": cp.usage(plan, outputs)})

    @app.post("/v1/chat/completions", response_model=None, responses=ERRORS)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """OpenAI's chat completions, in the model's chat template."""
        plan = await _plan(body)
        if plan.stream:
            return StreamingResponse(_stream(request, plan, chat=True), media_type="text/event-stream")
        outputs = await _wait(request, plan)
        choices = [{"index": c.index, "message": {"role": "assistant", "content": o.text}, "logprobs": None,
                    "finish_reason": o.finish_reason} for c, o in zip(plan.choices, outputs, strict=True)]
        return JSONResponse({"id": new_id("chatcmpl"), "object": "chat.completion", "created": now(),
                             "model": plan.model, "choices": choices, "usage": cp.usage(plan, outputs)})

    def _cards() -> list[ModelCard]:
        created = now()
        cards = [ModelCard(id=settings.model_name, created=created, root=lm.info.name)]
        for c in controls.loaded():
            cards.append(ModelCard(id=f"{settings.model_name}:{c.name}", created=created, root=lm.info.name,
                                   parent=settings.model_name, spec=c.spec.text))
        return cards

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        """The base model and every loaded control (``MODEL:NAME``, parent = the base model)."""
        return ModelList(data=_cards())

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=ERRORS)
    async def model(model_id: str) -> ModelCard:
        for card in _cards():
            if card.id == model_id:
                return card
        raise APIError(404, f"the model '{model_id}' does not exist", param="model", code="model_not_found")

    @app.get("/v1/controls", response_model=ControlList)
    async def list_controls() -> ControlList:
        """Loaded controls (usable as ``model: MODEL:NAME`` or ``controls: ["@NAME"]``) and the known kinds."""
        from lmcontrol import registry

        kinds = {name: entry.help for name, entry in sorted(registry.controls().items())}
        data = [ControlInfo(name=c.name, model=f"{settings.model_name}:{c.name}", spec=c.spec.text,
                            kind=c.spec.kind, help=kinds.get(c.spec.kind, "")) for c in controls.loaded()]
        return ControlList(data=data, kinds=kinds)

    @app.post("/v1/controls/load", response_model=ModelCard, responses=ERRORS)
    async def load_control(body: LoadControlRequest) -> ModelCard:
        """Build a control from its spec and serve it as ``MODEL:NAME`` (files only under the control roots)."""
        if not settings.allow_request_controls:
            raise APIError(403, "loading controls at run time is disabled on this server")
        loaded = await asyncio.to_thread(controls.load, body.name, body.spec)
        return ModelCard(id=f"{settings.model_name}:{loaded.name}", created=now(), root=lm.info.name,
                         parent=settings.model_name, spec=loaded.spec.text)

    @app.post("/v1/controls/unload", responses=ERRORS)
    async def unload_control(body: UnloadControlRequest) -> dict[str, Any]:
        """Stop serving a loaded control (requests already running finish with it)."""
        if not settings.allow_request_controls:
            raise APIError(403, "unloading controls at run time is disabled on this server")
        if not controls.unload(body.name):
            raise APIError(404, f"no loaded control '{body.name}'", param="name", code="model_not_found")
        return {"object": "control", "name": body.name, "unloaded": True}

    @app.post("/v1/score", response_model=ScoreResponse, responses=ERRORS)
    async def score(body: ScoreRequest) -> ScoreResponse:
        """Score texts (responses to ``prompt``) by toxicity, sentiment and HH reward."""
        from lmcontrol.serve import scores

        names = scores.check_metrics(body.metrics, settings.score_metrics)
        data = await asyncio.to_thread(scores.score, body.prompt, body.texts, names)
        return ScoreResponse(metrics=names, data=data)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness, the served model and the engine's counters."""
        return {"status": "ok", "model": settings.model_name, "root": lm.info.name, "engine": engine.stats(),
                "controls": [c.name for c in controls.loaded()]}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(PLAYGROUND / "index.html")

    app.mount("/playground", StaticFiles(directory=PLAYGROUND), name="playground")
    return app
