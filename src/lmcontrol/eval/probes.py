"""Linear probes: logistic regression on sentence-encoder embeddings, stored as a differentiable torch module.

A probe is ``softmax(W e(x) + b)`` over C labels, where ``e(x)`` is the unit-norm all-MiniLM-L6-v2 embedding
(384-d). It is fitted with scikit-learn's ``LogisticRegression`` (L2, lbfgs; the inverse strength C is picked
on a 10% validation part of the training rows), then its coefficients are copied into an ``nn.Linear`` and
saved as an artifact of kind ``probe`` (``base_model`` = the encoder id, ``hidden_size`` = its width) — never
pickled. Because ``forward`` is a plain linear layer over embeddings, gradients flow to the input: DGLM reuses
probes as guidance classifiers on predicted embeddings.

    probe = load_probe("sst2")                          # artifacts/probe-sst2
    probe.predict_proba(["what a lovely film"])         # (1, 2) numpy, columns = probe.config.labels
    logits = probe(embeddings)                          # (B, 384) torch -> (B, 2), differentiable

Train: ``lmcontrol train probe --data sst2 --out artifacts/probe-sst2`` (see :func:`train_probe`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmcontrol import LMControlError
from lmcontrol.artifacts import PretrainedMixin
from lmcontrol.eval.config import ProbeTrainConfig
from lmcontrol.settings import ARTIFACTS_DIR

log = logging.getLogger(__name__)

# Named probes shipped in artifacts/.
KNOWN_PROBES = {
    "sst2": "probe-sst2",
    "ag_news": "probe-agnews",
    "agnews": "probe-agnews",
    "jigsaw": "probe-jigsaw",
}
_PROBE_DATA = {"probe-sst2": "sst2", "probe-agnews": "ag_news", "probe-jigsaw": "jigsaw"}
# Readable names for registered data sets whose label column is a bare integer.
LABEL_NAMES = {"sst2": {"0": "negative", "1": "positive"}, "jigsaw": {"0": "non-toxic", "1": "toxic"}}
# Which split is the evaluation split of a registered data set (others: hold out part of the training rows).
EVAL_SPLITS = {"sst2": "dev", "ag_news": "test", "jigsaw": "test"}


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """What a probe predicts and from which embeddings."""

    labels: tuple[str, ...] = ("negative", "positive")  # class names, in logit order
    label_values: tuple[str, ...] = ("0", "1")  # the raw label-column values, same order
    input_dim: int = 384
    encoder: str = "all-MiniLM-L6-v2"

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "label_values", tuple(str(x) for x in self.label_values))
        if len(self.labels) < 2 or len(self.labels) != len(self.label_values):
            raise LMControlError(f"a probe needs >= 2 labels with one value each, got {self.labels}")
        if self.input_dim < 1:
            raise LMControlError(f"input_dim must be >= 1, got {self.input_dim}")


class LinearProbe(nn.Module, PretrainedMixin):
    """Logistic-regression probe on sentence embeddings: logits = W e + b."""

    artifact_kind = "probe"
    config_class = ProbeConfig

    def __init__(self, config: ProbeConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.input_dim, len(config.labels))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, d) unit-norm embeddings -> (B, C) logits."""
        return self.linear(embeddings)

    def label_index(self, label: str) -> int:
        """Column of a label, given by name or raw value."""
        for names in (self.config.labels, self.config.label_values):
            if str(label) in names:
                return names.index(str(label))
        raise LMControlError(f"probe has no label '{label}' (labels: {', '.join(self.config.labels)})")

    @torch.no_grad()
    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities (N, C) for texts, embedded with the probe's encoder."""
        from lmcontrol.eval.embeddings import embed

        emb = torch.from_numpy(embed(texts, _encoder_name(self.config.encoder), batch_size))  # (N, d)
        return self(emb).softmax(-1).numpy()

    @classmethod
    def from_logistic_regression(
        cls, config: ProbeConfig, coef: np.ndarray, intercept: np.ndarray
    ) -> LinearProbe:
        """Copy scikit-learn coefficients: (C, d) for C > 2 classes, or (1, d) for a binary model.

        A binary model's logit z = w·e + b becomes two logits (-z/2, z/2), whose softmax equals sigmoid(z).
        """
        probe = cls(config)
        coef, intercept = np.asarray(coef, dtype=np.float32), np.asarray(intercept, dtype=np.float32)
        if coef.shape[0] == 1:
            coef, intercept = (
                np.concatenate([-coef / 2, coef / 2]),
                np.concatenate([-intercept / 2, intercept / 2]),
            )
        with torch.no_grad():
            probe.linear.weight.copy_(torch.from_numpy(coef))
            probe.linear.bias.copy_(torch.from_numpy(intercept))
        return probe


def _encoder_name(recorded: str) -> str | None:
    from lmcontrol.models import encoder_id

    return None if recorded == encoder_id(None) else recorded


@functools.lru_cache(maxsize=8)
def load_probe(name_or_path: str) -> LinearProbe:
    """A probe by name (``sst2``, ``ag_news``, ``jigsaw``) from ``artifacts/``, or from an artifact directory."""
    key = name_or_path.lower()
    path = ARTIFACTS_DIR / KNOWN_PROBES[key] if key in KNOWN_PROBES else Path(name_or_path)
    if key in KNOWN_PROBES and not path.is_dir():
        data = _PROBE_DATA[path.name]
        raise LMControlError(
            f"probe '{name_or_path}' is not trained yet: lmcontrol train probe --data {data} --out {path}"
        )
    return LinearProbe.from_pretrained(path)


# ---------------------------------------------------------------------------------------------------------
# training


def _rows(
    spec: str, split: str, text_col: str, label_col: str
) -> tuple[list[str], list[str], dict[str, str]]:
    """Texts, labels (as strings) and any label names (``label_name`` column) of one split."""
    from lmcontrol.data import get_field, load_dataset

    rows = load_dataset(spec, split=split)  # a local file ignores split "train"
    texts, labels = get_field(rows, text_col, spec), get_field(rows, label_col, spec)
    keep = [
        i for i, t in enumerate(texts) if isinstance(t, str) and t.strip() and labels[i] not in (None, "")
    ]
    names = {str(rows[i][label_col]): str(rows[i]["label_name"]) for i in keep if "label_name" in rows[i]}
    return [texts[i] for i in keep], [str(labels[i]) for i in keep], names


def _label_order(values: list[str]) -> list[str]:
    distinct = set(values)
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return sorted(distinct)


def train_probe(config: ProbeTrainConfig) -> tuple[LinearProbe, dict[str, float | int | str]]:
    """Fit a probe; returns it with its metrics (held-out accuracy, sizes, chosen C)."""
    from sklearn.linear_model import LogisticRegression

    from lmcontrol.eval.embeddings import embed
    from lmcontrol.models import encoder_id

    name = config.data.split(":")[0].lower()
    texts, labels, names = _rows(config.data, "train", config.text_column, config.label_column)
    values = _label_order(labels)
    if len(values) < 2:
        only = f" ('{values[0]}')" if values else " (no labelled rows)"
        raise LMControlError(
            f"'{config.data}' column '{config.label_column}' has one class{only}; a probe needs at least two"
        )
    rng = random.Random(config.seed)
    idx = list(range(len(texts)))
    rng.shuffle(idx)
    eval_split = config.eval_split or EVAL_SPLITS.get(name)
    if eval_split is not None:
        ev_texts, ev_labels, _ = _rows(config.data, eval_split, config.text_column, config.label_column)
    else:
        n_hold = max(1, int(len(idx) * config.holdout))
        ev_texts, ev_labels = [texts[i] for i in idx[:n_hold]], [labels[i] for i in idx[:n_hold]]
        idx = idx[n_hold:]
    if config.limit is not None:
        idx = idx[: config.limit]
    tr_texts, tr_labels = [texts[i] for i in idx], [labels[i] for i in idx]
    if len(set(tr_labels)) < 2:
        raise LMControlError(
            f"the training rows of '{config.data}' have one class; a probe needs at least two"
        )
    unseen = sorted(set(ev_labels) - set(values))
    if unseen:
        log.warning("evaluation rows have labels not seen in training (%s); they count as errors", unseen)

    x_tr = embed(tr_texts, config.encoder, progress="embedding training rows")  # (N, d)
    x_ev = embed(ev_texts, config.encoder, progress="embedding evaluation rows")
    y_tr = np.array([values.index(v) for v in tr_labels])
    y_ev = np.array([values.index(v) if v in values else -1 for v in ev_labels])

    # pick C on a 10% validation part of the (shuffled) training rows, then refit on all of them
    n_val = max(1, len(y_tr) // 10)
    best_c, best_acc = config.cs[0], -1.0
    for c in config.cs:
        clf = LogisticRegression(C=c, max_iter=2000).fit(x_tr[n_val:], y_tr[n_val:])
        acc = float((clf.predict(x_tr[:n_val]) == y_tr[:n_val]).mean())
        log.info("C=%g: validation accuracy %.4f", c, acc)
        if acc > best_acc:
            best_c, best_acc = c, acc
    clf = LogisticRegression(C=best_c, max_iter=2000).fit(x_tr, y_tr)
    label_names = {**LABEL_NAMES.get(name, {}), **names}
    probe_cfg = ProbeConfig(
        labels=tuple(label_names.get(v, v) for v in values),
        label_values=tuple(values),
        input_dim=int(x_tr.shape[1]),
        encoder=encoder_id(config.encoder),
    )
    probe = LinearProbe.from_logistic_regression(probe_cfg, clf.coef_, clf.intercept_)
    probe.base_model, probe.base_hidden_size = probe_cfg.encoder, probe_cfg.input_dim
    probe.eval()
    with torch.no_grad():
        pred = probe(torch.from_numpy(x_ev)).argmax(-1).numpy()  # (N_eval,)
    metrics: dict[str, float | int | str] = {
        "eval_accuracy": float((pred == y_ev).mean()),
        "eval_split": eval_split or f"holdout {config.holdout:g} of train",
        "eval_rows": len(y_ev),
        "train_rows": len(y_tr),
        "C": best_c,
        "validation_accuracy": best_acc,
    }
    log.info("probe on %s: eval accuracy %.4f (%d rows)", config.data, metrics["eval_accuracy"], len(y_ev))
    return probe, metrics
