"""From token ids to text: EOS and stop strings, the final cut, and the streamed deltas."""

from __future__ import annotations

from lmcontrol.models import LanguageModel


def eos_ids(lm: LanguageModel) -> list[int]:
    ids = set()
    eos = getattr(lm.model.generation_config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(int(e) for e in eos)
    if lm.tokenizer.eos_token_id is not None:
        ids.add(int(lm.tokenizer.eos_token_id))
    return sorted(ids)


def hit_stop(lm: LanguageModel, generated: list[int], stop: tuple[str, ...]) -> bool:
    # Decode only a tail window: a stop string can only complete within the last few tokens.
    tail = lm.tokenizer.decode(generated[-16:], skip_special_tokens=True)
    return any(s in tail for s in stop)


def finalise(lm: LanguageModel, row: list[int], eos: set[int], stop: tuple[str, ...]) -> tuple[str, list[int]]:
    """Cut a row at its first EOS (and stop string) and decode it."""
    for j, t in enumerate(row):
        if t in eos:
            row = row[:j]
            break
    text = lm.tokenizer.decode(row, skip_special_tokens=True)
    if stop:
        hits = [text.find(s) for s in stop if s in text]
        if hits:
            text = text[: min(hits)]
            while row and len(lm.tokenizer.decode(row, skip_special_tokens=True)) > len(text):
                row = row[:-1]  # keep ids consistent with the cut text
    return text, list(row)


def stream_delta(lm: LanguageModel, generated: list[int], stop: tuple[str, ...], sent: int) -> str | None:
    """The text a running row may stream now beyond its first ``sent`` characters: holds back a possible
    stop-string start and an incomplete character (None = nothing to send yet)."""
    text = lm.tokenizer.decode(generated, skip_special_tokens=True)
    hold = max((len(s) for s in stop), default=1) - 1  # a stop string may be starting
    text = text[: len(text) - hold] if hold else text
    if text.endswith("\ufffd"):  # an incomplete character
        return None
    return text[sent:]
