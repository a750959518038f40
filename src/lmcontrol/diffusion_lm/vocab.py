"""A word-level vocabulary built from the (PTB-tokenized) E2E training sentences.

As in the official code, sequences are ``START w_1 … w_n END PAD … PAD`` of fixed length (``padding_mode
pad``): the PAD tail is what makes length control a simple infilling problem. Words seen fewer than
``min_count`` times map to UNK. The vocabulary is stored in the model artifact as a JSON list.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from lmcontrol import LMControlError

START, END, UNK, PAD = "START", "END", "UNK", "PAD"
SPECIALS = (START, END, UNK, PAD)


class Vocab:
    """An ordered list of words; ids 0–3 are START, END, UNK, PAD."""

    def __init__(self, words: Sequence[str]) -> None:
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise LMControlError(f"vocabulary must start with {', '.join(SPECIALS)}")
        if len(set(words)) != len(words):
            raise LMControlError("vocabulary has duplicate words")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    start_id, end_id, unk_id, pad_id = 0, 1, 2, 3

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 5) -> Vocab:
        """Words seen at least ``min_count`` times in whitespace-tokenized ``texts``, most frequent first."""
        counts = Counter(w for text in texts for w in text.split())
        kept = sorted(
            (w for w, c in counts.items() if c >= min_count and w not in SPECIALS),
            key=lambda w: (-counts[w], w),
        )
        return cls([*SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def ids(self, words: Iterable[str]) -> list[int]:
        """Word ids without specials (unknown words → UNK)."""
        return [self.index.get(w, self.unk_id) for w in words]

    def encode(self, text: str, seq_len: int) -> list[int]:
        """``START w… END PAD…`` of exactly ``seq_len`` ids; too-long sentences are cut (END is kept)."""
        body = self.ids(text.split())[: seq_len - 2]
        ids = [self.start_id, *body, self.end_id]
        return ids + [self.pad_id] * (seq_len - len(ids))

    def decode(self, ids: Iterable[int]) -> str:
        """The words up to the first END after a word; START and PAD are dropped wherever they occur."""
        out: list[str] = []
        for i in ids:
            w = self.words[int(i)]
            if w == END and out:
                break
            if w not in SPECIALS or w == UNK:
                out.append(w)
        return " ".join(out)
