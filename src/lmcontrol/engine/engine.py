"""The engine: owns the model and its KV slots, batches requests that carry different controls.

``Engine(lm).submit(request) -> RequestHandle``. Each ``step()`` (vLLM's scheduler + model runner, in small):

1. drops cancelled and timed-out requests;
2. admits waiting requests while rows are free (a best-of-N request takes N rows) and prefills them together
   (left padded, soft prompts of each control laid out on its rows) -> their first token;
3. runs one decode step for the rows that were already running -> their next token;
4. appends the tokens, streams text deltas, ends rows on EOS / stop string / length; finished rows leave the
   batch (their slots are refilled) and finished requests get their output.

Synchronous use: ``run_until_idle()``; servers: ``start()`` runs steps on a background thread. Tensors live on
the model's device and dtype; the engine runs under ``torch.no_grad`` (a control that needs gradients, such as
RE-Control, enables them locally).
"""

from __future__ import annotations

import collections
import copy
import logging
import threading
import time
from typing import Any

import torch

from lmcontrol import LMControlError
from lmcontrol.controls import Control, SoftPrompt, merge_soft_prompts
from lmcontrol.engine.cache import SlotCache
from lmcontrol.engine.request import QueueFull, Request, RequestHandle, RequestOutput, TokenEvent
from lmcontrol.engine.runner import lookahead_hidden, make_runner
from lmcontrol.engine.sampling import row_generator
from lmcontrol.engine.state import RequestState, Row, expired, prepare, rows_view
from lmcontrol.engine.step import next_tokens
from lmcontrol.engine.text import eos_ids, finalise, hit_stop, stream_delta
from lmcontrol.models import LanguageModel

log = logging.getLogger(__name__)


class Engine:
    """Continuous batching of controlled requests over one model.

    Args:
        lm: the model bundle (``lmcontrol.models.load_lm``); the engine reads it, never changes its weights.
        max_batch_size: rows decoded together at most (a best-of-N request counts N).
        max_queue: waiting requests at most; ``submit`` raises ``QueueFull`` beyond it.
    """

    def __init__(self, lm: LanguageModel, *, max_batch_size: int = 16, max_queue: int = 256) -> None:
        if max_batch_size < 1 or max_queue < 1:
            raise LMControlError("max_batch_size and max_queue must be >= 1")
        self.lm = lm
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        param = next(lm.model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.runner = make_runner(lm.model)
        info = lm.info
        self.cache = SlotCache(
            info.num_layers,
            info.num_kv_heads,
            info.head_dim,
            slots=max_batch_size,
            columns=64,
            dtype=self.dtype,
            device=self.device,
        )
        self.eos_set = set(eos_ids(lm))
        self.pad_id = int(lm.tokenizer.pad_token_id)
        self.waiting: collections.deque[RequestState] = collections.deque()
        self.running: list[Row] = []  # running[i] lives in cache slot i
        self._cond = threading.Condition()
        # a fast tokenizer refuses concurrent use ("Already borrowed"): callers' threads encode with their own
        # copy (one at a time), the engine thread alone uses lm.tokenizer
        self._submit_tokenizer = None  # made by start()
        self._submit_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = False
        self.counters: collections.Counter = collections.Counter()
        self._raise = True
        self._pending: list[RequestState] = []
        self.started = time.perf_counter()

    # ------------------------------------------------------------------------------------------------ submit
    def submit(self, request: Request, *, index: int = 0) -> RequestHandle:
        """Validate and queue a request (thread-safe). Raises ``LMControlError`` for bad input, ``QueueFull``."""
        request.validate()
        with self._submit_lock:
            state = prepare(self.lm, request, index, self.max_batch_size, self.pad_id, self._submit_tokenizer)
        with self._cond:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} waiting requests)")
            self.waiting.append(state)
            self.counters["submitted"] += 1
            self._cond.notify_all()
        return state.handle

    # ------------------------------------------------------------------------------------------------ run
    def run_until_idle(self, raise_errors: bool = True) -> None:
        """Step until nothing is waiting or running (synchronous use, no thread)."""
        while self.waiting or self.running:
            self.step(raise_errors=raise_errors)

    def start(self) -> None:
        """Run steps on a background thread until ``stop()`` (for servers)."""
        if self._thread is not None:
            return
        self._stop = False
        self._submit_tokenizer = copy.deepcopy(self.lm.tokenizer)
        self._thread = threading.Thread(target=self._loop, name="lmcontrol-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stop or self.waiting or self.running)
                if self._stop:
                    return
            self.step(raise_errors=False)

    def stats(self) -> dict[str, Any]:
        """Queue depth, running rows and counters (for /metrics)."""
        return {
            "queue_depth": len(self.waiting),
            "running": len(self.running),
            "max_batch_size": self.max_batch_size,
            "uptime_seconds": time.perf_counter() - self.started,
            **self.counters,
        }

    # ------------------------------------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, raise_errors: bool = True) -> None:
        """One scheduling step: expire, admit + prefill, decode, advance, evict."""
        self._raise = raise_errors
        self._pending: list[RequestState] = []
        try:
            self._expire()
            n_old = len(self.running)
            admitted = self._pending = self._admit()
            t0 = time.perf_counter()
            tokens = []
            if admitted:
                tokens.append(self._prefill(n_old, admitted))
            if n_old:
                tokens.insert(0, self._decode(n_old))
            self._pending = []
            if tokens:
                self.counters["steps"] += 1
                self.counters["step_seconds_total"] += time.perf_counter() - t0  # type: ignore[assignment]
                self._advance(torch.cat(tokens).tolist())
            self._evict()
        except Exception as exc:  # a failing step fails its requests, never the engine thread
            if raise_errors:
                self._abort_all(exc)
                raise
            log.exception("engine step failed")
            self._abort_all(exc)

    def _expire(self) -> None:
        now = time.perf_counter()
        with self._cond:
            waiting = list(self.waiting)
        for state in waiting:
            reason = expired(state, now)
            if reason:
                with self._cond:
                    self.waiting.remove(state)
                self._finish(state, reason)
        for seq in self.running:
            reason = expired(seq.state, now)
            if reason and not seq.done:
                seq.done, seq.finish_reason = True, reason

    def _admit(self) -> list[RequestState]:
        admitted: list[RequestState] = []
        rows = len(self.running)
        with self._cond:
            while self.waiting and rows + self.waiting[0].num_candidates <= self.max_batch_size:
                state = self.waiting.popleft()
                admitted.append(state)
                rows += state.num_candidates
        return admitted

    def _prefill(self, start: int, admitted: list[RequestState]) -> torch.Tensor:
        """Lay out the admitted requests' rows in slots start.. and run their prompts -> first tokens (A,)."""
        seqs = [
            Row(st, j, st.temperature, row_generator(st.params.seed, j, self.device))
            for st in admitted
            for j in range(st.num_candidates)
        ]
        embeds_prompt, kv_prompt = self._soft_prompts(seqs)
        n_virtual = sum(p.length for p in (embeds_prompt, kv_prompt) if p is not None)
        too_long = {}
        for st in admitted:
            if len(st.prompt_ids) + n_virtual + st.params.max_new_tokens > self.lm.info.max_positions:
                too_long[id(st)] = (
                    f"prompt too long: {len(st.prompt_ids)} tokens + {n_virtual} virtual + "
                    f"{st.params.max_new_tokens} new exceeds the model's context of {self.lm.info.max_positions}"
                )
        if too_long:
            if self._raise:
                raise LMControlError(next(iter(too_long.values())))
            for st in admitted:
                if id(st) in too_long:
                    self._finish(st, "error", error=too_long[id(st)])
            keep = [i for i, s in enumerate(seqs) if id(s.state) not in too_long]
            seqs = [seqs[i] for i in keep]
            embeds_prompt = embeds_prompt.select(keep) if embeds_prompt is not None else None
            kv_prompt = kv_prompt.select(keep) if kv_prompt is not None else None
            if not seqs:
                return torch.empty(0, dtype=torch.long, device=self.device)
        width = max(len(s.state.prompt_ids) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        tok_mask = torch.zeros(len(seqs), width, dtype=torch.bool)
        for i, s in enumerate(seqs):
            n = len(s.state.prompt_ids)
            ids[i, width - n :] = torch.tensor(s.state.prompt_ids)
            tok_mask[i, width - n :] = True
        ids, tok_mask = ids.to(self.device), tok_mask.to(self.device)
        x = self.runner.embed(ids)  # (A, T, d)
        mask = tok_mask
        if embeds_prompt is not None:
            x = torch.cat([embeds_prompt.embeds.to(x.dtype), x], dim=1)  # (A, m_e + T, d)
            mask = torch.cat([embeds_prompt.mask.to(self.device), mask], dim=1)
        positions = mask.long().cumsum(-1) - 1
        positions = positions.masked_fill(~mask, 1)  # pads at 1, as transformers does
        m_kv = kv_prompt.length if kv_prompt is not None else 0
        rows = slice(start, start + len(seqs))
        self._reserve(start + len(seqs), m_kv + x.shape[1], seqs)
        for slot in range(rows.start, rows.stop):
            self.cache.clear(slot)
        if kv_prompt is not None:
            self.cache.write_prefix(start, kv_prompt.kv, kv_prompt.mask.to(self.device))  # type: ignore[arg-type]
        self.cache.valid[rows, m_kv : m_kv + x.shape[1]] = mask
        self.cache.length[rows] = m_kv + x.shape[1]
        for s, p in zip(seqs, positions[:, -1].tolist(), strict=True):
            s.next_position = p + 1
        self.running.extend(seqs)

        def forward(x, positions, edits):
            return self.runner.forward(x, positions, self.cache, rows, m_kv, edits)

        return next_tokens(self.lm, self.runner, x, positions, seqs, forward, self._lookahead(start))

    def _decode(self, n: int) -> torch.Tensor:
        """One decode step for running rows 0..n-1: feed each row's last token -> next tokens (n,)."""
        seqs = self.running[:n]
        last = torch.tensor([s.generated[-1] for s in seqs], device=self.device)
        positions = torch.tensor([[s.next_position] for s in seqs], device=self.device)  # (n, 1)
        cols = self.cache.length[:n].clone()  # each row writes at its own next column
        self.cache.valid[torch.arange(n, device=self.device), cols] = True
        self.cache.length[:n] += 1
        for s in seqs:
            s.next_position += 1
        x = self.runner.embed(last[:, None])  # (n, 1, d)

        def forward(x, positions, edits):
            return self.runner.forward(x, positions, self.cache, slice(0, n), cols, edits)

        return next_tokens(self.lm, self.runner, x, positions, seqs, forward, self._lookahead(0))

    def _lookahead(self, start: int):
        def lookahead(rows: list[int], candidate_ids: torch.Tensor) -> torch.Tensor:
            slots = torch.tensor([start + r for r in rows], device=self.device)
            used = int(self.cache.length[slots].max())
            positions = torch.tensor([self.running[start + r].next_position for r in rows], device=self.device)
            return lookahead_hidden(self.lm.model, self.cache, slots, positions, used, candidate_ids)

        return lookahead

    def _reserve(self, slots: int, prefill_width: int, new: list[Row]) -> None:
        need = [prefill_width + s.state.params.max_new_tokens for s in new]
        need += [
            int(self.cache.length[i]) + s.state.params.max_new_tokens - len(s.generated)
            for i, s in enumerate(self.running)
        ]
        columns = max(need) + 1
        if columns > self.cache.columns:
            columns = max(columns, min(2 * self.cache.columns, self.lm.info.max_positions + 512))
        self.cache.reserve(slots, columns)

    def _soft_prompts(self, seqs: list[Row]) -> tuple[SoftPrompt | None, SoftPrompt | None]:
        """Each soft-prompt control computes its prompt once, on the rows that carry it; the parts are laid out
        per row (rows without a part see no virtual tokens there) and merged into one embeds / one kv prompt."""
        owners: dict[int, tuple[Control, list[int]]] = {}
        for i, s in enumerate(seqs):
            for c in s.state.controls:
                if c.uses_soft_prompt:
                    owners.setdefault(id(c), (c, []))[1].append(i)
        parts = []
        for c, rows in owners.values():
            part = c.soft_prompt(rows_view([seqs[i] for i in rows]))
            if part is not None:
                part = part.scatter(rows, len(seqs))
                if part.embeds is not None:
                    part = SoftPrompt(mask=part.mask.to(self.device), embeds=part.embeds.to(self.device, self.dtype))
                else:
                    part = SoftPrompt(
                        mask=part.mask.to(self.device), kv=[(k.to(self.device), v.to(self.device)) for k, v in part.kv]
                    )  # type: ignore[union-attr]
                parts.append(part)
        return merge_soft_prompts(parts)

    # ------------------------------------------------------------------------------------------------ finish
    def _advance(self, tokens: list[int]) -> None:
        now = time.perf_counter()
        for seq, tok in zip(self.running, tokens, strict=True):
            st = seq.state
            if st.first_token is None:
                st.first_token = now
            if seq.done:  # expired this step
                continue
            seq.generated.append(tok)
            self.counters["tokens_generated"] += 1
            if tok in self.eos_set:
                seq.done, seq.finish_reason = True, "stop"
            elif st.params.stop and hit_stop(self.lm, seq.generated, st.params.stop):
                seq.done, seq.finish_reason = True, "stop"
            elif len(seq.generated) >= st.params.max_new_tokens:
                seq.done, seq.finish_reason = True, "length"
            if st.streaming and not seq.done:
                self._stream(seq, final=False)

    def _stream(self, seq: Row, final: bool) -> None:
        """Send the row's new text: while running, what is safe to show; at the end, the rest of the final text."""
        st = seq.state
        if final:
            delta = finalise(self.lm, seq.generated, self.eos_set, st.params.stop)[0][seq.streamed :]
            if not delta:
                return
        else:
            delta = stream_delta(self.lm, seq.generated, st.params.stop, seq.streamed)
            if delta is None:
                return
        seq.streamed += len(delta)
        self._emit(st, TokenEvent(st.request.request_id, delta, seq.generated[-1] if seq.generated else None))

    def _emit(self, st: RequestState, event: TokenEvent) -> None:
        st.handle._push(event)
        if st.request.on_token is not None:
            try:
                st.request.on_token(event)
            except Exception:  # a broken callback must not stop the batch
                log.exception("on_token callback failed; cancelling request %s", st.request.request_id)
                st.handle.cancel()

    def _evict(self) -> None:
        """Finished rows leave the batch (the last running row moves into the freed slot)."""
        i = 0
        while i < len(self.running):
            seq = self.running[i]
            if not seq.done:
                i += 1
                continue
            last = len(self.running) - 1
            if i != last:
                self.cache.move(last, i)
                self.running[i] = self.running[last]
            else:
                self.cache.clear(i)
            self.running.pop()
            seq.state.rows.append(seq)
            if len(seq.state.rows) == seq.state.num_candidates:
                self._finish(seq.state, None)

    def _finish(self, st: RequestState, reason: str | None, error: str | None = None) -> None:
        rows = sorted(st.rows, key=lambda s: s.candidate)
        texts, ids = [], []
        for s in rows:
            t, i = finalise(self.lm, s.generated, self.eos_set, st.params.stop)
            texts.append(t)
            ids.append(i)
        choice = 0
        if st.num_candidates > 1 and len(rows) == st.num_candidates and reason is None:
            for c in st.controls:
                if c.uses_select:
                    choice = c.select([st.prompt], [texts])[0]
        if reason is None:
            reasons = [s.finish_reason for s in rows]
            reason = reasons[choice] or "length"
        if st.streaming and rows and reason in ("stop", "length"):
            self._stream(rows[0], final=True)
        elif (
            st.num_candidates > 1
            and texts
            and reason in ("stop", "length")
            and (st.request.stream or st.request.on_token)
        ):
            self._emit(st, TokenEvent(st.request.request_id, texts[choice], None))
        now = time.perf_counter()
        out = RequestOutput(
            request_id=st.request.request_id,
            text=texts[choice] if texts else "",
            token_ids=ids[choice] if ids else [],
            finish_reason=reason,
            prompt_tokens=len(st.prompt_ids),
            completion_tokens=sum(len(i) for i in ids),
            seconds=now - st.handle.submitted,
            first_token_seconds=(st.first_token or now) - st.handle.submitted,
            candidates=texts if st.num_candidates > 1 else None,
            candidate_ids=ids if st.num_candidates > 1 else None,
            error=error,
        )
        self.counters["requests_finished"] += 1
        self.counters[f"finish_{reason}"] += 1
        st.handle._finish(out)
        if st.request.on_token is not None and (reason in ("error", "timeout", "cancelled") or st.streaming):
            try:
                st.request.on_token(TokenEvent(out.request_id, "", None, True, reason))
            except Exception:
                log.exception("on_token callback failed")

    def _abort_all(self, exc: Exception) -> None:
        states = {id(s.state): s.state for s in self.running}
        states.update({id(st): st for st in self._pending if st.handle._output is None})
        self._pending = []
        self.running.clear()
        for slot in range(self.cache.slots):
            self.cache.clear(slot)
        for st in states.values():
            self._finish(st, "error", error=str(exc))
