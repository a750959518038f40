"""Engine-side state: what a ``Request`` becomes once submitted, and the rows it decodes in.

``prepare`` validates a request against the model and turns it into a ``RequestState`` (chat template, system
prompt, token ids, best-of-N rows, hidden-edit sites); each of its rows is a ``Row`` with its own generator and
tokens. Nothing here is stored on a control: controls are shared read-only between requests.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from lmcontrol import LMControlError
from lmcontrol.controls import Control, Rows
from lmcontrol.engine.request import Request, RequestHandle
from lmcontrol.models import LanguageModel


@dataclasses.dataclass
class RequestState:
    """Engine-side state of one request (shared by its best-of-N rows)."""

    request: Request
    handle: RequestHandle
    prompt: str
    text: str  # what the model reads: chat template, system prompt
    prompt_ids: list[int]
    controls: list[Control]
    hidden_sites: dict[int, int | None]  # id(control) -> layer (None = final norm)
    num_candidates: int
    temperature: float
    pad_id: int
    index: int = 0  # position in a generate() call (for error messages)
    deadline: float | None = None
    rows: list[Row] = dataclasses.field(default_factory=list)
    first_token: float | None = None

    @property
    def params(self):
        return self.request.params

    @property
    def streaming(self) -> bool:
        return (self.request.stream or self.request.on_token is not None) and self.num_candidates == 1


@dataclasses.dataclass
class Row:
    """One row of the batch: a request's candidate, its generator and the tokens it has produced."""

    state: RequestState
    candidate: int
    temperature: float
    generator: torch.Generator | None
    generated: list[int] = dataclasses.field(default_factory=list)
    next_position: int = 0
    done: bool = False
    finish_reason: str | None = None
    streamed: int = 0  # characters already sent


def rows_view(rows: list[Row]) -> Rows:
    """What controls see of these rows (prompts, model-facing texts, call positions, per-row meta)."""
    return Rows(
        prompts=[r.state.prompt for r in rows],
        texts=[r.state.text for r in rows],
        prompt_index=[r.state.index for r in rows],
        meta=[r.state.request.meta for r in rows],
    )


def prepare(
    lm: LanguageModel, request: Request, index: int, max_rows: int, pad_id: int, tokenizer: Any = None
) -> RequestState:
    """Validate ``request`` against the model and lay it out: template, system prompt, ids, rows, edit sites."""
    controls = list(request.controls)
    for c in controls:
        c.setup(lm)
    sites = {id(c): parse_site(c.hidden_site or "final", lm) for c in controls if c.uses_hidden}
    n_cand = max([c.num_candidates for c in controls] + [1])
    if n_cand > max_rows:
        raise LMControlError(f"best-of-{n_cand} needs more rows than the engine's batch of {max_rows}")
    temperature = float(request.params.temperature)
    if n_cand > 1 and temperature == 0:
        temperature = max(c.candidate_temperature for c in controls if c.num_candidates > 1)
    parts = [request.system] if request.system else []
    parts += [s for c in controls if (s := c.system_prompt())]
    system = "\n\n".join(parts) if parts else None
    chat = request.chat and not any(c.chat is False for c in controls)
    if request.messages is not None:
        text, prompt = format_messages(lm, request.messages, system), request.messages[-1]["content"]
    else:
        text, prompt = lm.format_prompt(request.prompt, chat=chat, system=system), request.prompt
    tokenizer = tokenizer if tokenizer is not None else lm.tokenizer
    ids = tokenizer(text, add_special_tokens=not (chat and lm.has_chat_template))["input_ids"]
    if len(ids) + request.params.max_new_tokens > lm.info.max_positions:
        raise LMControlError(
            f"prompt too long: {len(ids)} tokens + {request.params.max_new_tokens} new exceeds the model's "
            f"context of {lm.info.max_positions}"
        )
    handle = RequestHandle(request.request_id)
    deadline = handle.submitted + request.timeout if request.timeout else None
    return RequestState(
        request, handle, prompt, text, list(ids), controls, sites, n_cand, temperature, pad_id, index, deadline
    )


def expired(state: RequestState, now: float) -> str | None:
    if state.handle.cancelled:
        return "cancelled"
    if state.deadline is not None and now > state.deadline:
        return "timeout"
    return None


def parse_site(site: str, lm: LanguageModel) -> int | None:
    """None for the final-norm site, else the layer index."""
    if site in ("final", "final_norm"):
        return None
    if site.startswith("layer:"):
        try:
            layer = int(site.split(":", 1)[1])
        except ValueError:
            raise LMControlError(f"bad hidden site '{site}' (use 'final' or 'layer:L')") from None
        if not -lm.info.num_layers <= layer < lm.info.num_layers:
            raise LMControlError(f"hidden site '{site}': the model has {lm.info.num_layers} layers")
        return layer % lm.info.num_layers
    raise LMControlError(f"bad hidden site '{site}' (use 'final' or 'layer:L')")


def format_messages(lm: LanguageModel, messages: list[dict[str, str]], system: str | None) -> str:
    if not lm.has_chat_template:
        raise LMControlError(f"'{lm.info.name}' has no chat template; send a prompt instead of messages")
    msgs = [dict(m) for m in messages]
    if system:
        if msgs[0]["role"] == "system":
            msgs[0]["content"] = f"{system}\n\n{msgs[0]['content']}"
        else:
            msgs.insert(0, {"role": "system", "content": system})
    return lm.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
