"""``--control fudge``: FUDGE-style guidance of an autoregressive LM by the Diffusion-LM's classifiers (Yang & Klein
2021), the AR baseline of Li et al. 2022 §7 (a ``TopKRescoring`` with the classifiers as the candidate scorer).

At each decoding step FUDGE takes the top-k candidate next tokens and reweights them by an attribute classifier
on the candidate prefix (Yang & Klein 2021, Eq. 3): log p(x_{i+1} | x_≤i, a) ∝ log p(x_{i+1} | x_≤i) +
w · log p(a | x_≤i+1). Tokens outside the top-k are dropped. Here p(a | prefix) comes from the *same* classifiers
that steer the Diffusion-LM: the partial text is re-tokenised into the E2E word vocabulary (``e2e_words``), encoded
as a complete sentence ``START w… END PAD…`` with the Diffusion-LM's word embeddings, and classified at t = 0:

- semantic content: log p(field = value | prefix) from the attribute head;
- POS: Σ_i log p(tag_i | prefix) over the prefix's words (plus the END position once the candidate is EOS);
- syntax span: log σ(s(i + 1, j + 1)) from the span head;
- length: a rule, not a classifier (a word count is exact): −∞ (−1e4) for candidates that exceed n words and
  for EOS before n words.

Limits (honest): the classifiers were trained on whole sentences, so "the prefix as a sentence" is what they
judge — they reward a candidate that expresses the target now, not one that makes it likely later (FUDGE trains a
*future* discriminator on prefixes; we reuse the Diffusion-LM classifiers as the issue asks). A span beyond the
prefix cannot be judged until the prefix reaches it. Infilling has no left-to-right analogue and is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from lmcontrol import LMControlError
from lmcontrol.controls import ControlSpec, StepContext
from lmcontrol.diffusion_lm.classifiers import LatentClassifier, pos_sequence
from lmcontrol.diffusion_lm.model import DiffusionLM
from lmcontrol.diffusion_lm.spans import check_span
from lmcontrol.diffusion_lm.targets import ControlTarget
from lmcontrol.steering import TopKRescoring, continuation_texts

if TYPE_CHECKING:
    from lmcontrol.models import LanguageModel

NEG = -1e4  # a finite "impossible" score: a row whose candidates are all ruled out still picks one
_WORD = re.compile(r"'(?:s|t|re|ll|ve|d|m)(?![^\W\d_])|[^\W\d_]+|\d+(?:\.\d+)?|[^\w\s]")


def e2e_words(text: str) -> list[str]:
    """Raw text → E2E (PTB-like) words: punctuation, '£' and clitics split off ("doesn't" → "doesn 't")."""
    return _WORD.findall(text)


PrefixScorer = Callable[[list[list[str]], torch.Tensor], torch.Tensor]  # (words per row, is_final (N,)) → (N,)


class DiffusionClassifierScorer:
    """log p(target | prefix) for word prefixes, from the Diffusion-LM classifiers at t = 0 (see module doc)."""

    def __init__(
        self,
        model: DiffusionLM,
        target: ControlTarget,
        classifier: LatentClassifier | None = None,
        span_classifier: LatentClassifier | None = None,
    ) -> None:
        if model.vocab is None:
            raise LMControlError("the Diffusion-LM has no vocabulary attached")
        if target.infilling:
            raise LMControlError("FUDGE cannot infill: an AR model cannot condition on the right context")
        self.model, self.vocab, self.target = model, model.vocab, target
        self.classifier, self.span_classifier = classifier, span_classifier
        self._completions: dict[str, str] = {}
        L = model.config.seq_len
        if target.attribute is not None or target.pos is not None:
            if classifier is None:
                raise LMControlError("FUDGE attribute/POS guidance needs the latent classifier")
        self.attr = classifier.field_index(*target.attribute) if target.attribute is not None else None
        self.pos = None
        if target.pos is not None:
            self.pos = torch.tensor(classifier.tag_ids(pos_sequence(list(target.pos), L)))  # (L,)
        self.span = None
        if target.span is not None:
            if span_classifier is None or not span_classifier.config.spans:
                raise LMControlError("FUDGE syntax-span guidance needs the span classifier")
            self.span = check_span(target.span, L)
        if target.length is not None and not 1 <= target.length <= L - 2:
            raise LMControlError(f"length must be in 1..{L - 2} words, got {target.length}")
        if target.length is None and self.attr is None and self.pos is None and self.span is None:
            raise LMControlError("FUDGE needs a target (attribute, pos, span or length)")

    def completion(self, partial: str) -> str:
        """The most frequent vocabulary word that starts with ``partial`` (``partial`` itself if none)."""
        if partial in self.vocab:
            return partial
        if partial not in self._completions:  # the vocabulary is ordered by frequency after the specials
            self._completions[partial] = next((w for w in self.vocab.words[4:] if w.startswith(partial)), partial)
        return self._completions[partial]

    @torch.no_grad()
    def __call__(self, words: list[list[str]], final: torch.Tensor) -> torch.Tensor:
        """Scores (N,) for N word prefixes; ``final`` (N,) marks candidates that end the text (EOS).

        The AR model writes sub-words (" V" "ault" "s"), the classifiers read words: the last word of an
        unfinished prefix is completed to the most frequent vocabulary word it begins (" V" → "Vaults"), so a
        candidate that starts a target word is credited before the word is complete.
        """
        L = self.model.config.seq_len
        done = final.tolist()
        texts = [
            " ".join(w if d or not w else [*w[:-1], self.completion(w[-1])]) for w, d in zip(words, done, strict=True)
        ]
        dev = self.model.word_embedding.weight.device  # the classifiers' device; scores go back to the caller's
        out_device, final = final.device, final.to(dev)
        ids = torch.tensor([self.vocab.encode(text, L) for text in texts], device=dev)  # (N, L)
        x0 = self.model.embed(ids)  # (N, L, d) clean latents
        t = torch.zeros(ids.shape[0], dtype=torch.long, device=dev)
        n = torch.tensor([min(len(w), L - 2) for w in words], device=dev)  # (N,) words kept by encode
        score = torch.zeros(ids.shape[0], device=dev)
        if self.attr is not None or self.pos is not None:
            attr_logits, pos_logits = self.classifier(x0, t)
            if self.attr is not None:
                f, v = self.attr
                score += torch.log_softmax(attr_logits[f], dim=-1)[:, v]
            if self.pos is not None:
                logp = torch.log_softmax(pos_logits, dim=-1)  # (N, L, n_tags)
                tags = self.pos.to(dev).expand(ids.shape[0], -1)
                per_pos = logp.gather(-1, tags[..., None]).squeeze(-1)  # (N, L)
                pos_idx = torch.arange(L, device=dev)
                upto = n + final.long()  # words, plus the END position for a finished candidate
                keep = (pos_idx[None] >= 1) & (pos_idx[None] <= upto[:, None])  # (N, L)
                score += (per_pos * keep).sum(-1)
        if self.span is not None:
            p, q = self.span[0] + 1, self.span[1] + 1
            score += nn.functional.logsigmoid(self.span_classifier.span_logits(x0, t)[:, p, q])
        if self.target.length is not None:
            n_words = torch.tensor([len(w) for w in words], device=dev)
            too_long = n_words > self.target.length
            early_end = final & (n_words != self.target.length)
            score = score + NEG * (too_long | early_end).float()
        return score.to(out_device)


class FudgeControl(TopKRescoring):
    """FUDGE as a logits processor: top-k candidates reweighted by ``weight · log p(a | prefix + candidate)``.

    Args:
        scorer: ``scorer(words per candidate, is_final (N,)) -> (N,)`` log-probabilities of the target.
        top_k: candidates scored per step (Yang & Klein use 200; the benchmark uses 20 for CPU cost).
        weight: w, the classifier weight (1 = the FUDGE posterior).
        always_eos: also score EOS when it is outside the top-k (needed for length targets).
    """

    name = "fudge"

    def __init__(self, scorer: PrefixScorer, *, top_k: int = 20, weight: float = 1.0, always_eos: bool = False):
        if top_k < 1:
            raise LMControlError(f"FUDGE top_k must be >= 1, got {top_k}")
        self.prefix_scorer, self.always_eos = scorer, always_eos
        super().__init__(self.target_log_prob, top_k=top_k, weight=weight, skip_finished=True)

    def setup(self, lm: LanguageModel) -> None:
        self.always = (int(lm.tokenizer.eos_token_id),) if self.always_eos else ()

    def target_log_prob(self, candidates: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """log p(target | the row's new text + candidate) (B, k), read in E2E words."""
        texts = continuation_texts(candidates, ctx)
        final = (candidates == int(ctx.lm.tokenizer.eos_token_id)).reshape(-1).cpu()  # (B·k,)
        return self.prefix_scorer([e2e_words(t) for t in texts], final).reshape(candidates.shape)


def fudge_from_spec(spec: ControlSpec, lm: LanguageModel) -> FudgeControl:
    """``--control fudge:attribute=food=Italian[,pos=…][,span=3-5][,length=12][,k=20][,weight=1]``."""
    from lmcontrol.diffusion_lm.config import DEFAULT_CLASSIFIER_DIR, DEFAULT_MODEL_DIR, DEFAULT_SPAN_CLASSIFIER_DIR
    from lmcontrol.diffusion_lm.spans import parse_span_text

    spec.check_keys(("attribute", "pos", "span", "length", "k", "weight", "model", "classifier", "span_classifier"))
    attribute = spec.str("attribute")
    if attribute is not None and "=" not in attribute:
        raise LMControlError(f"--control {spec.text}: attribute must be field=value, got '{attribute}'")
    pos, span = spec.str("pos"), spec.str("span")
    target = ControlTarget(
        attribute=tuple(p.strip() for p in attribute.split("=", 1)) if attribute else None,
        pos=tuple(pos.split()) if pos else None,
        span=parse_span_text(span) if span else None,
        length=spec.int("length", 0, min_value=1) if spec.str("length") else None,
    )
    model = DiffusionLM.load(spec.str("model") or DEFAULT_MODEL_DIR)
    needs_clf = target.attribute is not None or target.pos is not None
    clf = LatentClassifier.from_pretrained(spec.str("classifier") or DEFAULT_CLASSIFIER_DIR) if needs_clf else None
    span_clf = None
    if target.span is not None:
        span_clf = LatentClassifier.from_pretrained(spec.str("span_classifier") or DEFAULT_SPAN_CLASSIFIER_DIR)
    for m in (model, clf, span_clf):
        if m is not None:
            m.eval().requires_grad_(False)
    scorer = DiffusionClassifierScorer(model, target, clf, span_clf)
    return FudgeControl(
        scorer,
        top_k=spec.int("k", 20, min_value=1),
        weight=spec.float("weight", 1.0, min_value=0.0),
        always_eos=target.length is not None,
    )
