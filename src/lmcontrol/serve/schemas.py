"""Request and response bodies in OpenAI's shapes (``/v1/completions``, ``/v1/chat/completions``), plus the
lmcontrol extensions.

Extensions to OpenAI's request fields (both endpoints):

- ``controls``: ``--control`` spec strings (``"recontrol:artifacts/recontrol-hh,step_size=0.5"``), or
  ``"@NAME"`` for a loaded control, optionally with options appended (``"@steer,scale=4"``);
- ``top_k``: keep the k most likely tokens before sampling (0 or -1 = off, as in vLLM);
- ``meta``: per-request fields for controls (e.g. ``{"prefix": "e2e"}`` for ``prefix-library``).

Unknown fields are ignored (the official client sends some we do not use); fields that would change the
output in ways lmcontrol does not implement (``logprobs``, ``echo``, penalties, ``logit_bias``, tools) are
refused with a 400 by ``unsupported()`` rather than silently ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_SEED = 2**63 - 1


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    """Fields shared by both endpoints."""

    model: str = Field(description="The served model name, or a loaded control as MODEL:NAME (or NAME).")
    max_tokens: int | None = Field(None, ge=1, description="Tokens to generate (capped by the server).")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, description="Choices per prompt.")
    stop: str | list[str] | None = Field(None, description="Up to 4 stop strings (not included in the text).")
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # OpenAI fields lmcontrol does not implement: accepted only at their neutral values (see unsupported()).
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    # lmcontrol extensions
    controls: list[str] = Field(
        default_factory=list,
        description="Control specs as for `--control`, or @NAME[,key=value...] for a loaded control.",
    )
    top_k: int = Field(0, ge=-1, description="Top-k filter (0 or -1 = off).")
    meta: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Per-request fields read by controls, e.g. {'prefix': 'e2e'}."
    )

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def unsupported(self) -> list[str]:
        """Fields set to values lmcontrol would have to ignore (the caller answers 400)."""
        bad = []
        if self.presence_penalty:
            bad.append("presence_penalty")
        if self.frequency_penalty:
            bad.append("frequency_penalty")
        if self.logit_bias:
            bad.append("logit_bias")
        return bad


class CompletionRequest(_Sampling):
    """``POST /v1/completions``: raw-text continuation (no chat template)."""

    prompt: str | list[str] = Field(description="One prompt or a list of prompts.")
    max_tokens: int | None = Field(16, ge=1, description="Tokens to generate (OpenAI's default: 16).")
    logprobs: int | None = Field(None, ge=0)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def unsupported(self) -> list[str]:
        bad = super().unsupported()
        if self.logprobs is not None:
            bad.append("logprobs")
        if self.echo:
            bad.append("echo")
        if self.suffix:
            bad.append("suffix")
        if self.best_of not in (None, 1, self.n):
            bad.append("best_of (use a best-of control: controls=['best-of:4,reward=hh'])")
        return bad


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``: a conversation in the model's chat template."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="Newer name of max_tokens.")
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0)
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> list[str]:
        bad = super().unsupported()
        if self.logprobs:
            bad.append("logprobs")
        if self.tools:
            bad.append("tools")
        if self.response_format and self.response_format.get("type", "text") != "text":
            bad.append("response_format")
        return bad


# ---------------------------------------------------------------------------------------------------------
# responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: str | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lmcontrol"
    root: str
    parent: str | None = None
    spec: str | None = Field(None, description="lmcontrol extension: the control spec of a loaded artifact.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class LoadControlRequest(_Body):
    """``POST /v1/controls/load``: build a control once and serve it as ``MODEL:NAME``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    spec: str = Field(min_length=1, max_length=2000, description="A --control spec, e.g. prefix:artifacts/x.")


class UnloadControlRequest(_Body):
    name: str = Field(min_length=1, max_length=64)


class ControlInfo(BaseModel):
    name: str
    model: str
    spec: str
    kind: str
    help: str


class ControlList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ControlInfo]
    kinds: dict[str, str] = Field(description="Registered control kinds and their one-line help.")


class ScoreRequest(_Body):
    """``POST /v1/score``: score responses to one prompt by lmcontrol's evaluation metrics."""

    prompt: str = Field("", max_length=32_000)
    texts: list[str] = Field(min_length=1, max_length=16)
    metrics: list[str] | None = Field(None, description="Default: every metric the server offers.")


class ScoreResponse(BaseModel):
    object: Literal["list"] = "list"
    metrics: list[str]
    data: list[dict[str, float]] = Field(description="One {metric: value} per text.")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
