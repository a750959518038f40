"""Surface metrics over text: Dist-n, rep-n, RE-Control's diversity, repetition rate, BLEU, ROUGE-L.

All n-gram metrics use the same word tokenisation, :func:`words` (runs of word characters, and every other
non-space character on its own — close to NLTK's ``word_tokenize`` without its data download), so a
continuation ending in ``"fine."`` has the tokens ``fine`` and ``.``.

- **Dist-n** (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation Models"):
  distinct n-grams / total n-grams over a *set* of texts. DGLM (Lovelace et al. 2024) reports Dist-3 over the
  samples of one prompt, averaged over prompts; :func:`distinct_n` computes one set, the metric groups.
- **rep-n** (Welleck et al. 2020; Su et al. 2022, SimCTG): ``1 - |unique n-grams(x)| / |n-grams(x)|`` of one
  text. RE-Control (Kong et al. 2024) reports rep-2..4 and **diversity = Π_{n=2..4} (1 - rep-n)**, both per
  response and averaged over responses. Its script divides by ``|n-grams| + 1`` (so a text with no repeat
  still has rep-n > 0); we use the paper's definition without the +1, so our diversity is slightly higher.
- **repetition rate**: share of texts that repeat at least one 4-gram — a degenerate-loop indicator (natural
  text of a few dozen words almost never repeats a 4-gram; a looping sampler always does).
- **BLEU**: sacrebleu's corpus BLEU with a variable number of references per hypothesis (Post 2018).
- **ROUGE-L**: ``rouge-score``'s ROUGE-L F-measure (Lin 2004), best reference per hypothesis, averaged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD_RE = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Word tokens: runs of word characters, and each punctuation/symbol character on its own."""
    return _WORD_RE.findall(text)


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """All contiguous n-grams of a token list (empty if it has fewer than n tokens)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Dist-n of a set of texts: distinct n-grams over all of them / total n-grams (0 if there are none)."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def rep_n(text: str, n: int) -> float:
    """rep-n of one text: ``1 - unique/total`` n-grams (0 for a text shorter than n tokens)."""
    grams = ngrams(words(text), n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def diversity(text: str, orders: Sequence[int] = (2, 3, 4)) -> float:
    """RE-Control's diversity of one text: Π_n (1 - rep-n)."""
    out = 1.0
    for n in orders:
        out *= 1.0 - rep_n(text, n)
    return out


def repeats_ngram(text: str, n: int = 4) -> bool:
    """True if some n-gram occurs twice in the text."""
    grams = ngrams(words(text), n)
    return len(set(grams)) < len(grams)


def repetition_rate(texts: Sequence[str], n: int = 4) -> float:
    """Share of texts that repeat at least one n-gram."""
    return sum(repeats_ngram(t, n) for t in texts) / len(texts) if texts else 0.0


def _references(references: Sequence[str | Sequence[str]]) -> list[list[str]]:
    """Each hypothesis' references as a non-empty list of strings."""
    out = []
    for i, refs in enumerate(references):
        refs = [refs] if isinstance(refs, str) else [r for r in refs if r]
        if not refs:
            raise ValueError(f"hypothesis {i} has no reference")
        out.append(list(refs))
    return out


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """sacrebleu corpus BLEU (0-100) with any number of references per hypothesis.

    sacrebleu wants reference *streams* (the k-th reference of every hypothesis); hypotheses with fewer
    references fill the missing slots with ``None``, which sacrebleu skips.
    """
    import sacrebleu

    refs = _references(references)
    if len(refs) != len(hypotheses):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(refs)} reference lists")
    k = max((len(r) for r in refs), default=0)
    streams = [[r[j] if j < len(r) else None for r in refs] for j in range(k)]
    return float(sacrebleu.corpus_bleu(list(hypotheses), streams).score)


def rouge_l(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Mean over hypotheses of the best ROUGE-L F-measure against its references (0-1)."""
    from rouge_score import rouge_scorer

    refs = _references(references)
    if len(refs) != len(hypotheses):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(refs)} reference lists")
    if not refs:
        return 0.0
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    best = [
        max(scorer.score(r, h)["rougeL"].fmeasure for r in rs) for h, rs in zip(hypotheses, refs, strict=True)
    ]
    return sum(best) / len(best)
