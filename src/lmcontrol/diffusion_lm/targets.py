"""What a caller asks Diffusion-LM for (``ControlTarget``), the fixed-word template it implies and the classifier
objectives that steer the latents (Li et al. 2022 §5, §7).

- **Classifier objectives** (§5.2, eq. 3–4): log p(c | x_t) from a classifier on noised latents
  (``LatentClassifier``): semantic content (an E2E field = value), POS tags, syntax spans (§7.1: words i..j form a
  constituent, defined as a spaCy dependency subtree span, see ``spans.py``). They run as the samplers'
  corrector (``lmcontrol.diffusion.guidance.GradientCorrector``).
- **Infilling, length** (§7.2, §7.1): fixed positions are imputed (``DiffusionLM.denoiser``): length n pins
  ``END`` at position n+1 and ``PAD`` after it.
- **Composition**: objectives add (log-probabilities of independent constraints), templates combine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import nn

from lmcontrol import LMControlError
from lmcontrol.diffusion_lm.classifiers import LatentClassifier
from lmcontrol.diffusion_lm.vocab import Vocab

Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t (B, L, d), t (B,)) -> log p(c | x_t) (B,)


def attribute_objective(clf: LatentClassifier, field: str, value: str) -> Objective:
    """log p(field = value | x_t) from the attribute head."""
    f, v = clf.field_index(field, value)

    def objective(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(clf(x, t)[0][f], dim=-1)[:, v]

    return objective


def pos_objective(clf: LatentClassifier, tags: Sequence[str], seq_len: int) -> Objective:
    """Σ_i log p(tag_i | x_t) over all positions of ``START tags… END PAD…``."""
    from lmcontrol.diffusion_lm.classifiers import pos_sequence

    target = torch.tensor(clf.tag_ids(pos_sequence(list(tags), seq_len)))  # (L,)

    def objective(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(clf(x, t)[1], dim=-1)  # (B, L, n_tags)
        tags = target.to(x.device).expand(x.shape[0], -1)  # (B, L), on the latents' device
        return logp.gather(-1, tags[..., None]).squeeze(-1).sum(-1)

    return objective


def span_objective(clf: LatentClassifier, span: tuple[int, int]) -> Objective:
    """log p(words i..j form a constituent | x_t) = log σ(s(i + 1, j + 1)) (word w sits at position w + 1)."""
    p, q = span[0] + 1, span[1] + 1

    def objective(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return nn.functional.logsigmoid(clf.span_logits(x, t)[:, p, q])  # (B,)

    return objective


def compose(*objectives: Objective) -> Objective:
    """Several constraints at once: log p(c_1, c_2 | x) = Σ log p(c_i | x) (independence)."""
    return lambda x, t: sum(o(x, t) for o in objectives)


@dataclasses.dataclass(frozen=True)
class ControlTarget:
    """A control request; any combination of fields composes (infilling excludes length/POS).

    Args:
        attribute: (field, value) from an E2E MR, e.g. ("food", "Italian").
        pos: UPOS tags of the words, e.g. ("PROPN", "AUX", "DET", "NOUN", "PUNCT"); also fixes the length.
        length: number of words.
        span: syntax span (i, j), 0-based inclusive word indices that must form a constituent.
        left: infilling: words before the gap (tokenized like E2E, e.g. "The Vaults is").
        right: infilling: words after the gap.
        middle: infilling: number of words to generate in the gap.
    """

    attribute: tuple[str, str] | None = None
    pos: tuple[str, ...] | None = None
    length: int | None = None
    span: tuple[int, int] | None = None
    left: str | None = None
    right: str | None = None
    middle: int = 6

    @property
    def infilling(self) -> bool:
        return self.left is not None or self.right is not None


def template(target: ControlTarget, vocab: Vocab, seq_len: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Fixed ids (L,) and their mask (L,) for length/POS/infilling targets, or None if nothing is fixed."""
    n_words = len(target.pos) if target.pos is not None else target.length
    if target.pos is not None and target.length is not None and target.length != len(target.pos):
        raise LMControlError(f"length {target.length} disagrees with the {len(target.pos)} POS tags")
    if target.infilling:
        if n_words is not None:
            raise LMControlError("infilling cannot be combined with a length or POS target")
        if target.middle < 1:
            raise LMControlError(f"infilling middle must be >= 1 word, got {target.middle}")
        left, right = (target.left or "").split(), (target.right or "").split()
        unknown = [w for w in left + right if w not in vocab]
        if unknown:
            raise LMControlError(
                f"infilling context has words not in the vocabulary: {' '.join(unknown[:5])}"
            )
        total = len(left) + target.middle + len(right) + 2
        if total > seq_len:
            raise LMControlError(f"infilling template needs {total} positions but the model has {seq_len}")
        ids = [
            vocab.start_id,
            *vocab.ids(left),
            *[vocab.pad_id] * target.middle,
            *vocab.ids(right),
            vocab.end_id,
        ]
        mask = [True] * (len(left) + 1) + [False] * target.middle + [True] * (len(right) + 1)
    elif n_words is not None:
        if not 1 <= n_words <= seq_len - 2:
            raise LMControlError(f"length must be in 1..{seq_len - 2} words, got {n_words}")
        ids = [vocab.start_id, *[vocab.pad_id] * n_words, vocab.end_id]
        mask = [True] + [False] * n_words + [True]
    else:
        return None
    pad = seq_len - len(ids)
    return torch.tensor(ids + [vocab.pad_id] * pad), torch.tensor(mask + [True] * pad)


TARGET_KEYS = ("attribute", "pos", "span", "length", "left", "right", "middle", "id")


def target_text(target: ControlTarget, key: int | None = None) -> str:
    """A target as one line of ``key=value`` parts joined by ``|`` (``parse_target`` reads it back), e.g.
    ``attribute=food=Italian|pos=PROPN AUX DET NOUN PUNCT``; ``id=K`` only tells repeated targets apart."""
    parts = []
    if target.attribute is not None:
        parts.append(f"attribute={target.attribute[0]}={target.attribute[1]}")
    if target.pos is not None:
        parts.append(f"pos={' '.join(target.pos)}")
    if target.span is not None:
        parts.append(f"span={target.span[0]},{target.span[1]}")
    if target.length is not None:
        parts.append(f"length={target.length}")
    if target.infilling:
        parts += [f"left={target.left or ''}", f"right={target.right or ''}", f"middle={target.middle}"]
    if key is not None or not parts:
        parts.append(f"id={key or 0}")
    return "|".join(parts)


def parse_target(text: str) -> ControlTarget:
    """The ``ControlTarget`` of a ``target_text`` line (bench prompts; LMControlError on a malformed one)."""
    from lmcontrol.diffusion_lm.spans import parse_span_text

    fields: dict[str, str] = {}
    for part in text.split("|"):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or key not in TARGET_KEYS:
            raise LMControlError(f"target {text!r}: '{part}' is not one of {', '.join(TARGET_KEYS)} as key=value")
        fields[key] = value.strip()
    attribute = fields.get("attribute")
    if attribute is not None and "=" not in attribute:
        raise LMControlError(f"target {text!r}: attribute must be field=value, got '{attribute}'")

    def integer(key: str) -> int | None:
        if key not in fields:
            return None
        if not fields[key].isdigit():
            raise LMControlError(f"target {text!r}: {key} must be a whole number, got '{fields[key]}'")
        return int(fields[key])

    return ControlTarget(
        attribute=tuple(p.strip() for p in attribute.split("=", 1)) if attribute else None,  # type: ignore[arg-type]
        pos=tuple(fields["pos"].split()) if fields.get("pos") else None,
        span=parse_span_text(fields["span"]) if "span" in fields else None,
        length=integer("length"),
        left=fields.get("left"),
        right=fields.get("right"),
        middle=6 if integer("middle") is None else integer("middle"),  # type: ignore[arg-type]
    )
