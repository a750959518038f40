"""Fast tests for the torch port of the `toxic-comment-classifier` Jigsaw BiLSTM (lmcontrol.eval.toxicity)."""

from __future__ import annotations

import importlib.util
import io
import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("h5py")

from lmcontrol.eval import toxicity  # noqa: E402
from lmcontrol.eval.toxicity import (  # noqa: E402
    KerasTextTokenizer,
    ToxicityClassifier,
    ToxicityScorer,
    get_toxicity_scorer,
    read_keras_weights,
)

needs_package = pytest.mark.skipif(
    not toxicity.package_available(), reason="toxic-comment-classifier package not installed"
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# The package README's example output for "You are so dumb and stupid!" (Keras/TensorFlow inference).
README_DUMB_SCORES = {
    "toxic": 0.9889402985572815,
    "severe_toxic": 0.07256772369146347,
    "obscene": 0.620429277420044,
    "threat": 0.01934845559298992,
    "insult": 0.8664075136184692,
    "identity_hate": 0.04072948172688484,
}
# README's `predict_batch` output: the *mean* of the six label probabilities, rounded to 4 decimals.
README_MEAN_SCORES = {
    "I hate you so much!": 0.1395,
    "This is wonderful news.": 0.0013,
    "You're disgusting!": 0.3110,
    "Absolutely love your energy!": 0.0088,
    "You're the worst person ever!": 0.0937,
    "Have a nice day :)": 0.0115,
}


@pytest.fixture(scope="module")
def tokenizer() -> KerasTextTokenizer:
    return KerasTextTokenizer.from_json()


@pytest.fixture(scope="module")
def scorer() -> ToxicityScorer:
    return get_toxicity_scorer()


# ---------------------------------------------------------------------------------------------------------
# Tokenizer (needs only the bundled vocab.json)
# ---------------------------------------------------------------------------------------------------------


def test_vocab_is_small_and_complete(tokenizer: KerasTextTokenizer) -> None:
    assert toxicity.VOCAB_PATH.stat().st_size < 5 * 1024 * 1024
    assert tokenizer.maxlen == 100 and tokenizer.padding == "pre" and tokenizer.truncating == "pre"
    ids = sorted(tokenizer.word_index.values())
    assert ids == list(range(1, 20000))  # every id the 20,000-row embedding can use, nothing else


def test_punctuation_and_case(tokenizer: KerasTextTokenizer) -> None:
    # Filter characters become separators; the apostrophe is not a filter, so "you're" stays one word.
    assert tokenizer.text_to_word_sequence("You're SO dumb,and\tstupid!!") == [
        "you're",
        "so",
        "dumb",
        "and",
        "stupid",
    ]
    assert tokenizer.text_to_word_sequence("  ...  ") == []
    assert tokenizer.text_to_ids("The THE the.") == [1, 1, 1]  # "the" is the most frequent word
    assert tokenizer.text_to_ids("Hello, world") == tokenizer.text_to_ids("hello world")


def test_oov_words_are_dropped(tokenizer: KerasTextTokenizer) -> None:
    # The tokenizer has no OOV token, so unknown words and words beyond num_words vanish (as in Keras).
    assert tokenizer.oov_index is None
    assert tokenizer.text_to_ids("qwzxvbnmplk") == []
    assert tokenizer.text_to_ids("the qwzxvbnmplk the") == [1, 1]
    assert tokenizer.pad([tokenizer.text_to_ids("qwzxvbnmplk")]).tolist() == [[0] * 100]


def test_padding_and_truncation_are_pre(tokenizer: KerasTextTokenizer) -> None:
    short = tokenizer.pad([[5, 6, 7]])[0]
    assert short.shape == (100,) and short[:97].tolist() == [0] * 97 and short[97:].tolist() == [5, 6, 7]
    # truncating="pre" keeps the *last* maxlen ids
    long = tokenizer.pad([list(range(1, 151))])[0]
    assert long.tolist() == list(range(51, 151))
    words = " ".join(["the"] * 120 + ["you"] * 30)
    assert tokenizer.encode([words])[0].tolist() == [1] * 70 + [6] * 30


def test_post_padding_option() -> None:
    tok = KerasTextTokenizer(
        {"a": 1, "b": 2},
        filters="!",
        lower=True,
        split=" ",
        char_level=False,
        oov_token=None,
        maxlen=3,
        padding="post",
        truncating="post",
    )
    assert tok.pad([[1, 2], [1, 2, 1, 2]]).tolist() == [[1, 2, 0], [1, 2, 1]]


# ---------------------------------------------------------------------------------------------------------
# Converter: the restricted unpickler
# ---------------------------------------------------------------------------------------------------------


def _load_converter():
    path = REPO_ROOT / "scripts" / "convert_toxicity_vocab.py"
    spec = importlib.util.spec_from_file_location("convert_toxicity_vocab", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_restricted_unpickler_refuses_other_globals() -> None:
    converter = _load_converter()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        converter.RestrictedUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()


# ---------------------------------------------------------------------------------------------------------
# Model (needs the package's weights)
# ---------------------------------------------------------------------------------------------------------


@needs_package
def test_readme_sentences(scorer: ToxicityScorer) -> None:
    dumb, nice = scorer.score(["You are so dumb and stupid!", "Have a nice day :)"])
    print(f"\n'You are so dumb and stupid!' toxic={dumb:.4f}  'Have a nice day :)' toxic={nice:.4f}")
    assert dumb >= 0.9
    assert nice <= 0.15


@needs_package
def test_matches_keras_readme_outputs(scorer: ToxicityScorer) -> None:
    # The README numbers come from the original Keras model: agreeing to float32 precision means the
    # tokenizer and the weight conversion are both exact.
    (scores,) = scorer.score_all(["You are so dumb and stupid!"])
    assert scores.keys() == README_DUMB_SCORES.keys()
    for label, expected in README_DUMB_SCORES.items():
        assert scores[label] == pytest.approx(expected, abs=1e-5), label
    texts = list(README_MEAN_SCORES)
    means = [float(np.mean(list(d.values()))) for d in scorer.score_all(texts)]
    assert means == pytest.approx(list(README_MEAN_SCORES.values()), abs=6e-5)


@needs_package
def test_batching_matches_one_by_one(scorer: ToxicityScorer) -> None:
    texts = [
        "You are so dumb and stupid!",
        "Have a nice day :)",
        "",
        "thanks for the edit",
        " ".join(["this article is fine"] * 40),
        "go away idiot",
        "I will find you",
        "Great work!!!",
    ]
    batched = scorer.score(texts, batch_size=3)
    single = [scorer.score([t])[0] for t in texts]
    assert batched == pytest.approx(single, abs=1e-6)
    assert scorer.score([]) == [] and scorer.score_all([]) == []


@needs_package
def test_lstm_matches_numpy_keras_reference(scorer: ToxicityScorer) -> None:
    """Independent check of the Keras->torch LSTM mapping: re-run the Keras equations in numpy."""
    w = read_keras_weights(toxicity.package_weights_path())
    ids = scorer.tokenizer.encode(["you are an idiot, go away", "nice edit, thanks"]).numpy()

    def sigmoid(x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-x))

    def keras_lstm(x: np.ndarray, kernel: np.ndarray, rec: np.ndarray, bias: np.ndarray) -> np.ndarray:
        units = rec.shape[0]
        h = np.zeros((x.shape[0], units))
        c = np.zeros((x.shape[0], units))
        outs = []
        for t in range(x.shape[1]):
            z = x[:, t] @ kernel + h @ rec + bias
            i, f, g, o = (z[:, k * units : (k + 1) * units] for k in range(4))  # Keras order i, f, c, o
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            outs.append(h)
        return np.stack(outs, axis=1)

    emb = w["embedding"][ids].astype(np.float64)
    fwd = keras_lstm(emb, w["forward_kernel"], w["forward_recurrent_kernel"], w["forward_bias"])
    bwd = keras_lstm(emb[:, ::-1], w["backward_kernel"], w["backward_recurrent_kernel"], w["backward_bias"])
    pooled = np.concatenate([fwd, bwd[:, ::-1]], axis=-1).max(axis=1)
    hidden = np.maximum(pooled @ w["dense_kernel"] + w["dense_bias"], 0.0)
    expected = sigmoid(hidden @ w["out_kernel"] + w["out_bias"])

    got = scorer.predict_proba(["you are an idiot, go away", "nice edit, thanks"])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_missing_package_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toxicity.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(toxicity.ToxicityPackageMissing) as excinfo:
        ToxicityClassifier.from_package()
    assert str(excinfo.value) == (
        "toxicity judge needs the 'toxic-comment-classifier' package: "
        "pip install --no-deps toxic-comment-classifier"
    )
