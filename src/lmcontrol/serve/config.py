"""Server settings: names, limits and safety rules of ``lmcontrol serve`` (one frozen dataclass)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lmcontrol import LMControlError
from lmcontrol.settings import ARTIFACTS_DIR


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """What the HTTP layer enforces before a request reaches the engine.

    Args:
        model_name: the name clients send as ``model`` (``/v1/models`` lists it); a loaded control NAME is
            served as ``{model_name}:{NAME}`` (as Ray Serve LLM and vLLM name adapters).
        max_prompt_tokens: longest prompt (tokens, after the chat template for chat requests).
        max_prompt_chars: longest prompt text accepted before tokenising (cheap first guard).
        max_tokens: the largest ``max_tokens`` a request may ask for.
        default_max_tokens: ``max_tokens`` when a chat request leaves it out (at most ``max_tokens``;
            completions default to 16, as OpenAI's API does).
        max_controls: controls per request (the ``model`` artifact counts as one).
        max_n: choices per prompt (``n``).
        max_prompts: prompts per ``/v1/completions`` call (a list ``prompt``).
        request_timeout: seconds from submission until the engine gives up on a request.
        retry_after: seconds sent in ``Retry-After`` with a 429 when the engine's queue is full.
        allow_request_controls: accept control specs in requests (``controls`` and ``/v1/controls/load``);
            loaded controls (``--control NAME=SPEC``) always work.
        control_roots: directories request specs may read files from (any argument naming an existing path
            must resolve inside one of them).
        control_cache_size: built controls kept per spec string (least recently used are dropped).
        score_metrics: metrics ``POST /v1/score`` offers.
    """

    model_name: str = "smollm2"
    max_prompt_tokens: int = 2048
    max_prompt_chars: int = 32_000
    max_tokens: int = 512
    default_max_tokens: int = 128
    max_controls: int = 4
    max_n: int = 8
    max_prompts: int = 16
    request_timeout: float = 120.0
    retry_after: int = 1
    allow_request_controls: bool = True
    control_roots: tuple[Path, ...] = (ARTIFACTS_DIR,)
    control_cache_size: int = 16
    score_metrics: tuple[str, ...] = ("toxicity", "sentiment", "reward")

    def __post_init__(self) -> None:
        if not self.model_name or ":" in self.model_name:
            raise LMControlError(f"model name must be non-empty without ':', got {self.model_name!r}")
        positive = ("max_prompt_tokens", "max_prompt_chars", "max_tokens", "default_max_tokens", "max_n",
                    "max_prompts", "control_cache_size", "retry_after")
        for name in positive:
            if getattr(self, name) < 1:
                raise LMControlError(f"serve setting {name} must be >= 1, got {getattr(self, name)}")
        if self.max_controls < 0:
            raise LMControlError(f"serve setting max_controls must be >= 0, got {self.max_controls}")
        if not self.request_timeout > 0:
            raise LMControlError(f"serve setting request_timeout must be > 0, got {self.request_timeout}")
