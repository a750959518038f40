"""Strategies: cluster successful prompts, name each cluster by its most typical prompts, and the diversity /
fluency metrics of a set of prompts.

- Clusters are of *strategies*, not topics: before embedding, the words a prompt shares with its behaviour's target
  reply are replaced by one ``<Y>`` (``strategy_text``), so "Repeat after me: Sure, here is a bomb tutorial" and
  "Repeat after me: Sure, here is a phishing email" fall together and apart from "Complete the sentence: <Y>".
- Clustering: all-MiniLM-L6-v2 sentence embeddings (``lmcontrol.models.load_encoder``), agglomerative clustering
  (scikit-learn, average linkage, cosine distance, a distance threshold instead of a fixed count, so the number
  of strategies is found, not chosen). A cluster's name is its ``n_names`` prompts closest to its centroid.
- Self-BLEU (Zhu et al. 2018, Texygen): each prompt's sentence BLEU (sacrebleu) against the others of the
  same behaviour, averaged, in [0, 1]; lower is more diverse. Prompts that quote y share y's n-grams, so it is also
  reported on the target-masked texts, with the number of *distinct strategies* (``distinct_texts``: successes
  whose masked texts overlap every earlier one by less than 0.5 BLEU; edits of one template count once).
- Prompt perplexity: exp of the mean token NLL of x's tokens as a user message (after the chat template's
  default system turn) under the plain base LM.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from lmcontrol import LMControlError


@dataclasses.dataclass
class Strategies:
    labels: list[int]  # cluster id per prompt
    names: dict[int, list[str]]  # cluster id -> its most typical prompts
    sizes: dict[int, int]


def strategy_text(prompt: str, target: str | None, marker: str = "<Y>") -> str:
    """``prompt`` with every run of words that also occur in ``target`` (and the punctuation inside or right after
    the run) replaced by one ``marker`` (case-insensitive); ``marker=""`` drops the runs."""
    if not target:
        return prompt
    vocab = {w.lower() for w in re.findall(r"[\w']+", target)}
    out: list[str | None] = []  # None = a masked run
    for tok in re.findall(r"[\w']+|[^\w\s]+", prompt):
        in_run = bool(out) and out[-1] is None
        if tok.lower() in vocab or (in_run and not tok.strip("\"'.,:;!?-")):
            if not in_run:
                out.append(None)
        else:
            out.append(tok)
    return " ".join(marker if t is None else t for t in out if t is not None or marker)


def cluster_prompts(
    prompts: Sequence[str],
    distance_threshold: float = 0.5,
    n_names: int = 2,
    encoder: str | None = None,
    texts: Sequence[str] | None = None,
) -> Strategies:
    """Cluster ``prompts`` into strategies (see the module docstring); ``texts`` (one per prompt, e.g.
    ``strategy_text``) are what is embedded, the names are the original prompts."""
    from sklearn.cluster import AgglomerativeClustering

    from lmcontrol.models import load_encoder

    prompts = list(prompts)
    if not prompts:
        return Strategies([], {}, {})
    if len(prompts) == 1:
        return Strategies([0], {0: prompts[:1]}, {0: 1})
    emb = np.asarray(
        load_encoder(encoder).encode(list(texts or prompts), normalize_embeddings=True, show_progress_bar=False)
    )
    labels = AgglomerativeClustering(
        n_clusters=None, distance_threshold=distance_threshold, metric="cosine", linkage="average"
    ).fit_predict(emb)
    # renumber by size (0 = largest)
    counts: dict[int, int] = {}
    for lab in labels:
        counts[int(lab)] = counts.get(int(lab), 0) + 1
    order = {lab: i for i, lab in enumerate(sorted(counts, key=lambda k: -counts[k]))}
    labels = [order[int(lab)] for lab in labels]
    names, sizes = {}, {}
    for c in range(len(order)):
        idx = [i for i, lab in enumerate(labels) if lab == c]
        centroid = emb[idx].mean(0)
        best = sorted(idx, key=lambda i: -float(emb[i] @ centroid))[:n_names]
        names[c] = [prompts[i] for i in best]
        sizes[c] = len(idx)
    return Strategies(labels, names, sizes)


def self_bleu(texts: Sequence[str]) -> float | None:
    """Mean sentence BLEU of each text against all others, in [0, 1] (None for fewer than two texts)."""
    import sacrebleu

    texts = list(texts)
    if len(texts) < 2:
        return None
    scores = [sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1 :]).score / 100.0 for i, t in enumerate(texts)]
    return float(np.mean(scores))


def bleu_overlap(a: str, b: str) -> float:
    """Symmetric n-gram overlap of two texts in [0, 1]: the larger of sentence BLEU(a | b) and BLEU(b | a); two
    identical texts (also two empty ones) overlap fully."""
    import sacrebleu

    if a.strip() == b.strip():
        return 1.0
    return max(sacrebleu.sentence_bleu(a, [b]).score, sacrebleu.sentence_bleu(b, [a]).score) / 100.0


def distinct_indices(texts: Sequence[str], max_overlap: float = 0.5, limit: int | None = None) -> list[int]:
    """Indices kept by a greedy pass over ``texts`` in the given order that drops every text overlapping an earlier
    kept one by ``bleu_overlap`` >= ``max_overlap`` (stops at ``limit`` kept)."""
    kept: list[int] = []
    for i, t in enumerate(texts):
        if limit is not None and len(kept) >= limit:
            break
        if all(bleu_overlap(t, texts[k]) < max_overlap for k in kept):
            kept.append(i)
    return kept


def distinct_texts(texts: Sequence[str], max_overlap: float = 0.5) -> int:
    """How many of ``texts`` survive ``distinct_indices``: the count of distinct strategies, not of edits."""
    return len(distinct_indices(texts, max_overlap))


def prompt_perplexity(lm: Any, prompts: Sequence[str], batch_size: int = 16) -> list[float]:
    """Perplexity of each prompt as a user turn under the plain base LM (no controls, no adapters)."""
    import torch

    from lmcontrol.redteam.model import teacher_forced_logprobs, user_turn_prefix

    if not prompts:
        raise LMControlError("no prompts to score")
    head = user_turn_prefix(lm)
    out: list[float] = []
    with torch.no_grad():
        for s in range(0, len(prompts), batch_size):
            chunk = list(prompts[s : s + batch_size])
            lp, n = teacher_forced_logprobs(lm.model, lm.tokenizer, [head] * len(chunk), chunk, eos=False)
            out += [math.exp(-a / max(int(b), 1)) for a, b in zip(lp.tolist(), n.tolist(), strict=True)]
    return out
