"""Toxicity judge: the `toxic-comment-classifier` package's Jigsaw BiLSTM, ported to PyTorch.

The PyPI package ``toxic-comment-classifier`` (module ``toxic_classifier``) ships a small Keras 3 model
trained on the Jigsaw Toxic Comment data, but it needs TensorFlow and loads a pickle at run time. This
module rebuilds the same network in torch and fills it from the package's ``model.weights.h5`` with
h5py, so the package only has to be installed with ``--no-deps`` (it is a weights container here).

Architecture (from the package's ``model.py``; sizes read from the ``.h5`` shapes)::

    ids (batch, 100) -> Embedding(20000, 50) -> BiLSTM(50 per direction, return_sequences)
      -> (batch, 100, 100) -> global max-pool over time -> Dense(50, relu) -> Dropout(0.1)
      -> Dense(6, sigmoid)

The six outputs are the Jigsaw labels ``toxic, severe_toxic, obscene, threat, insult, identity_hate``.

Tokenisation reproduces Keras' legacy ``Tokenizer.texts_to_sequences`` + ``pad_sequences`` exactly, from
``assets/toxicity/vocab.json`` (made once by ``scripts/convert_toxicity_vocab.py``; nothing is unpickled
at run time). Note the package does *not* apply its ``utils.clean_text`` before classifying, so neither
do we.

Public API: :class:`ToxicityScorer` (``score`` / ``score_all``), :func:`get_toxicity_scorer` (cached),
:class:`ToxicityClassifier` (the ``nn.Module``), :class:`KerasTextTokenizer`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmcontrol import LMControlError
from lmcontrol.settings import ASSETS_DIR

log = logging.getLogger(__name__)

VOCAB_PATH = ASSETS_DIR / "toxicity" / "vocab.json"
PACKAGE_MODULE = "toxic_classifier"
MISSING_PACKAGE_MESSAGE = (
    "toxicity judge needs the 'toxic-comment-classifier' package: "
    "pip install --no-deps toxic-comment-classifier"
)
TOXIC_LABEL = "toxic"


class ToxicityPackageMissing(LMControlError):
    """The ``toxic-comment-classifier`` package (which holds the weights) is not installed."""


# --------------------------------------------------------------------------------------------------------
# Tokenisation: Keras legacy Tokenizer + pad_sequences
# --------------------------------------------------------------------------------------------------------


class KerasTextTokenizer:
    """Re-implementation of Keras' legacy ``Tokenizer.texts_to_sequences`` and ``pad_sequences``.

    Semantics copied from ``keras.src.legacy.preprocessing.text`` and ``keras.utils.pad_sequences``:

    - word mode: optionally lower-case, replace every character of ``filters`` by ``split``, split on
      ``split`` and drop empty pieces (so punctuation separates words and never forms a token);
    - char mode: optionally lower-case and take the characters as tokens (filters do not apply);
    - a word with id ``>= num_words`` or unknown becomes the OOV id, or is dropped if there is no OOV
      token (the JSON only holds ids below the limit, so both cases are "not in ``word_index``");
    - pad/truncate to ``maxlen``: ``"pre"`` keeps the *last* ``maxlen`` ids / pads on the left.
    """

    def __init__(
        self,
        word_index: dict[str, int],
        *,
        filters: str,
        lower: bool,
        split: str,
        char_level: bool,
        oov_token: str | None,
        maxlen: int,
        padding: str = "pre",
        truncating: str = "pre",
        pad_value: int = 0,
    ) -> None:
        if padding not in ("pre", "post") or truncating not in ("pre", "post"):
            raise ValueError(f"padding/truncating must be 'pre' or 'post', got {padding!r}/{truncating!r}")
        self.word_index = word_index
        self.filters = filters
        self.lower = lower
        self.split = split
        self.char_level = char_level
        self.oov_token = oov_token
        self.oov_index = word_index.get(oov_token) if oov_token is not None else None
        self.maxlen = maxlen
        self.padding = padding
        self.truncating = truncating
        self.pad_value = pad_value
        # Same construction as Keras: each filtered character is translated to the split string.
        self._translate_map = str.maketrans({c: split for c in filters})

    @classmethod
    def from_json(cls, path: Path = VOCAB_PATH) -> KerasTextTokenizer:
        """Build from the vocabulary JSON written by ``scripts/convert_toxicity_vocab.py``."""
        return cls.from_vocab(load_vocab(path))

    @classmethod
    def from_vocab(cls, vocab: dict[str, Any]) -> KerasTextTokenizer:
        """Build from an already-parsed vocabulary dict."""
        tok, pre = vocab["tokenizer"], vocab["preprocessing"]
        return cls(
            vocab["word_index"],
            filters=tok["filters"],
            lower=tok["lower"],
            split=tok["split"],
            char_level=tok["char_level"],
            oov_token=tok["oov_token"],
            maxlen=pre["maxlen"],
            padding=pre["padding"],
            truncating=pre["truncating"],
            pad_value=pre["value"],
        )

    def text_to_word_sequence(self, text: str) -> list[str]:
        """Split ``text`` into tokens the way the Keras Tokenizer does."""
        if self.char_level:
            return list(text.lower() if self.lower else text)
        if self.lower:
            text = text.lower()
        return [piece for piece in text.translate(self._translate_map).split(self.split) if piece]

    def text_to_ids(self, text: str) -> list[int]:
        """Token ids of one text, unpadded (Keras ``texts_to_sequences`` for a single text)."""
        ids: list[int] = []
        for word in self.text_to_word_sequence(text):
            idx = self.word_index.get(word)
            if idx is not None:
                ids.append(idx)
            elif self.oov_index is not None:
                ids.append(self.oov_index)
        return ids

    def pad(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Keras ``pad_sequences(sequences, maxlen)`` with this tokenizer's padding/truncating sides."""
        out = np.full((len(sequences), self.maxlen), self.pad_value, dtype=np.int64)
        for row, seq in enumerate(sequences):
            if not seq:
                continue  # an empty sequence stays all padding, as in Keras
            kept = seq[-self.maxlen :] if self.truncating == "pre" else seq[: self.maxlen]
            if self.padding == "post":
                out[row, : len(kept)] = kept
            else:
                out[row, self.maxlen - len(kept) :] = kept
        return out

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Padded id matrix ``(len(texts), maxlen)`` ready for :class:`ToxicityClassifier`."""
        return torch.from_numpy(self.pad([self.text_to_ids(t) for t in texts]))


def load_vocab(path: Path = VOCAB_PATH) -> dict[str, Any]:
    """Read the converted vocabulary JSON (see ``assets/toxicity/README.md``)."""
    with Path(path).open(encoding="utf-8") as fh:
        vocab = json.load(fh)
    if vocab.get("format") != "lmcontrol-keras-tokenizer/1":
        raise ValueError(f"{path}: unknown vocabulary format {vocab.get('format')!r}")
    return vocab


# --------------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------------


class ToxicityClassifier(nn.Module):
    """Embedding -> BiLSTM -> global max-pool -> Dense(relu) -> Dense, as in the Keras package.

    ``forward`` returns the six *logits*; :meth:`predict_proba` applies the sigmoid the Keras model ends
    with. Keras' Embedding here has no ``mask_zero``, so padding id 0 is an ordinary embedding row that
    runs through the LSTM and takes part in the max-pool; we therefore neither pack sequences nor set
    ``padding_idx`` (that would change the outputs).
    """

    def __init__(
        self,
        vocab_size: int = 20000,
        embedding_dim: int = 50,
        lstm_units: int = 50,
        hidden_dim: int = 50,
        num_labels: int = 6,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        # Keras LSTM defaults: tanh activation, sigmoid recurrent activation -- the same as torch's LSTM.
        self.lstm = nn.LSTM(embedding_dim, lstm_units, batch_first=True, bidirectional=True)
        self.dense = nn.Linear(2 * lstm_units, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, num_labels)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_labels)`` for padded ids ``(batch, seq_len)``."""
        states, _ = self.lstm(self.embedding(ids))  # (batch, seq, 2*units): [forward, backward]
        pooled = states.max(dim=1).values  # GlobalMaxPooling1D over time
        return self.out(self.dropout(torch.relu(self.dense(pooled))))

    def predict_proba(self, ids: torch.Tensor) -> torch.Tensor:
        """Per-label probabilities, i.e. the Keras model's sigmoid output."""
        return torch.sigmoid(self(ids))

    @classmethod
    def from_package(cls, weights_path: Path | None = None) -> ToxicityClassifier:
        """Build the model from the package's Keras 3 ``model.weights.h5`` (or an explicit path).

        Layer sizes are taken from the weight shapes, so the module always matches the file.
        """
        path = Path(weights_path) if weights_path is not None else package_weights_path()
        weights = read_keras_weights(path)
        vocab_size, embedding_dim = weights["embedding"].shape
        lstm_units = weights["forward_recurrent_kernel"].shape[0]
        hidden_dim = weights["dense_kernel"].shape[1]
        num_labels = weights["out_kernel"].shape[1]
        model = cls(vocab_size, embedding_dim, lstm_units, hidden_dim, num_labels)
        model.load_keras_weights(weights)
        log.info(
            "loaded toxicity BiLSTM from %s (vocab %d, emb %d, lstm 2x%d, dense %d, labels %d)",
            path,
            vocab_size,
            embedding_dim,
            lstm_units,
            hidden_dim,
            num_labels,
        )
        return model.eval()

    @torch.no_grad()
    def load_keras_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Copy Keras arrays (as returned by :func:`read_keras_weights`) into this module.

        Keras LSTM: kernel ``(input, 4u)``, recurrent kernel ``(u, 4u)``, one bias ``(4u,)``, gates in the
        order i, f, c, o. Torch LSTM: ``weight_ih (4u, input)``, ``weight_hh (4u, u)``, gates i, f, g, o
        (g is Keras' c), and two biases that are simply added. So: transpose, keep the gate order, put the
        Keras bias in ``bias_ih`` and zeros in ``bias_hh``. Keras Dense kernels ``(in, out)`` transpose to
        torch's ``(out, in)``.
        """

        def put(param: torch.Tensor, array: np.ndarray) -> None:
            if tuple(param.shape) != array.shape:
                raise ValueError(f"shape mismatch: torch {tuple(param.shape)} vs keras {array.shape}")
            param.copy_(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))

        put(self.embedding.weight, weights["embedding"])
        for direction, suffix in (("forward", ""), ("backward", "_reverse")):
            put(getattr(self.lstm, f"weight_ih_l0{suffix}"), weights[f"{direction}_kernel"].T)
            put(getattr(self.lstm, f"weight_hh_l0{suffix}"), weights[f"{direction}_recurrent_kernel"].T)
            put(getattr(self.lstm, f"bias_ih_l0{suffix}"), weights[f"{direction}_bias"])
            getattr(self.lstm, f"bias_hh_l0{suffix}").zero_()
        put(self.dense.weight, weights["dense_kernel"].T)
        put(self.dense.bias, weights["dense_bias"])
        put(self.out.weight, weights["out_kernel"].T)
        put(self.out.bias, weights["out_bias"])


# Where each array lives in a Keras 3 ``.weights.h5`` (layers/<layer name>/.../vars/<creation order>).
# Keras 3 does not store layer configs in this file; names and meanings follow the package's model.py.
_H5_LAYOUT = {
    "embedding": "layers/embedding/vars/0",
    "forward_kernel": "layers/bidirectional/forward_layer/cell/vars/0",
    "forward_recurrent_kernel": "layers/bidirectional/forward_layer/cell/vars/1",
    "forward_bias": "layers/bidirectional/forward_layer/cell/vars/2",
    "backward_kernel": "layers/bidirectional/backward_layer/cell/vars/0",
    "backward_recurrent_kernel": "layers/bidirectional/backward_layer/cell/vars/1",
    "backward_bias": "layers/bidirectional/backward_layer/cell/vars/2",
    "dense_kernel": "layers/dense/vars/0",
    "dense_bias": "layers/dense/vars/1",
    "out_kernel": "layers/dense_1/vars/0",
    "out_bias": "layers/dense_1/vars/1",
}


def read_keras_weights(path: Path) -> dict[str, np.ndarray]:
    """Read the package's Keras arrays from the ``.h5`` into a dict keyed as in ``_H5_LAYOUT``."""
    import h5py  # optional dependency (the "eval" extra): imported only when weights are loaded

    with h5py.File(path, "r") as h5:
        missing = [key for key in _H5_LAYOUT.values() if key not in h5]
        if missing:
            raise ValueError(f"{path} is not the toxic-comment-classifier weight file (missing {missing})")
        return {name: np.asarray(h5[key][()]) for name, key in _H5_LAYOUT.items()}


def package_dir() -> Path:
    """Directory of the installed ``toxic_classifier`` module, found without importing it (TensorFlow)."""
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ToxicityPackageMissing(MISSING_PACKAGE_MESSAGE)
    return Path(next(iter(spec.submodule_search_locations)))


def package_weights_path() -> Path:
    """The package's ``model/model.weights.h5``."""
    path = package_dir() / "model" / "model.weights.h5"
    if not path.is_file():
        raise ToxicityPackageMissing(f"{MISSING_PACKAGE_MESSAGE} (installed copy lacks {path})")
    return path


def package_available() -> bool:
    """Whether the weights can be found (for skipping tests / optional metrics)."""
    try:
        package_weights_path()
    except ToxicityPackageMissing:
        return False
    return True


# --------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _cached_model(weights_path: Path | None) -> ToxicityClassifier:
    # Shared by every scorer: the model is read-only at inference, so one copy per weight file suffices.
    return ToxicityClassifier.from_package(weights_path)


@functools.lru_cache(maxsize=4)
def _cached_vocab(vocab_path: Path) -> dict[str, Any]:
    return load_vocab(vocab_path)


class ToxicityScorer:
    """Score texts with the Jigsaw BiLSTM; the model is loaded on first use and cached per process."""

    def __init__(self, weights_path: Path | None = None, vocab_path: Path = VOCAB_PATH) -> None:
        self.weights_path = Path(weights_path) if weights_path is not None else None
        self.vocab_path = Path(vocab_path)
        vocab = _cached_vocab(self.vocab_path)
        self.vocab_source: dict[str, Any] = vocab["source"]
        self.labels: list[str] = list(vocab["labels"])
        self.toxic_index = self.labels.index(TOXIC_LABEL)
        self.tokenizer = KerasTextTokenizer.from_vocab(vocab)
        self._model: ToxicityClassifier | None = None

    @property
    def model(self) -> ToxicityClassifier:
        """The torch model, loaded (and checked against the vocabulary's source) on first access."""
        if self._model is None:
            self._check_weights_match_vocab()
            self._model = _cached_model(self.weights_path)
        return self._model

    def _check_weights_match_vocab(self) -> None:
        # The vocabulary was converted from one package version; other weights may use other word ids.
        path = self.weights_path or package_weights_path()
        expected = self.vocab_source.get("weights_h5_sha256")
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if expected and actual != expected:
            log.warning(
                "%s differs from the weights the vocabulary was converted with (package %s); "
                "scores may be wrong -- re-run scripts/convert_toxicity_vocab.py",
                path,
                self.vocab_source.get("version"),
            )

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Probabilities ``(len(texts), len(labels))`` as float32."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        model = self.model
        chunks: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                ids = self.tokenizer.encode(texts[start : start + batch_size])
                chunks.append(model.predict_proba(ids).numpy())
        if not chunks:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.concatenate(chunks)

    def score(self, texts: Sequence[str], batch_size: int = 64) -> list[float]:
        """Probability of the ``toxic`` label for each text."""
        return [float(p) for p in self.predict_proba(texts, batch_size)[:, self.toxic_index]]

    def score_all(self, texts: Sequence[str], batch_size: int = 64) -> list[dict[str, float]]:
        """All six label probabilities for each text, e.g. ``{"toxic": 0.99, "insult": 0.87, ...}``."""
        probs = self.predict_proba(texts, batch_size)
        return [dict(zip(self.labels, map(float, row), strict=True)) for row in probs]


@functools.lru_cache(maxsize=1)
def get_toxicity_scorer() -> ToxicityScorer:
    """The process-wide default scorer (package weights + bundled vocabulary)."""
    return ToxicityScorer()
