"""Evaluation metrics against hand-computed values, probe/reward edge cases, and eval CLI bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lmcontrol import LMControlError
from lmcontrol.cli.main import main
from lmcontrol.eval import text_metrics as tm

# ---------------------------------------------------------------------------------------------------------
# n-gram metrics


def test_words_split_punctuation():
    assert tm.words("Hi, you're fine.") == ["Hi", ",", "you", "'", "re", "fine", "."]


def test_distinct_n_by_hand():
    texts = ["a b a b", "a c"]
    # unigrams a b a b a c: 3 distinct of 6; bigrams ab ba ab ac: 3 distinct of 4
    assert tm.distinct_n(texts, 1) == pytest.approx(3 / 6)
    assert tm.distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert tm.distinct_n(texts, 3) == pytest.approx(2 / 2)  # aba bab
    assert tm.distinct_n(["a"], 2) == 0.0


def test_rep_n_and_diversity_by_hand():
    text = "the cat . the cat ."
    # bigrams: (the cat) (cat .) (. the) (the cat) (cat .) -> 3 unique of 5
    assert tm.rep_n(text, 2) == pytest.approx(1 - 3 / 5)
    # trigrams: the-cat-. cat-.-the .-the-cat the-cat-. -> 3 unique of 4
    assert tm.rep_n(text, 3) == pytest.approx(1 - 3 / 4)
    assert tm.rep_n(text, 4) == 0.0  # 3 four-grams, all different
    assert tm.diversity(text) == pytest.approx((1 - 0.4) * (1 - 0.25) * 1.0)
    assert tm.rep_n("short", 2) == 0.0
    assert tm.diversity("one two") == 1.0


def test_repetition_rate():
    assert tm.repetition_rate(["a b c d a b c d", "a b c d e"]) == pytest.approx(0.5)
    assert tm.repetition_rate([]) == 0.0


def test_bleu_equals_sacrebleu_with_multiple_references():
    import sacrebleu

    hyps = ["the cat sat on the mat", "a dog runs in the park today"]
    refs = [["the cat sat on a mat", "there is a cat on the mat"], ["the dog runs in a park today"]]
    expected = sacrebleu.corpus_bleu(hyps, [[refs[0][0], refs[1][0]], [refs[0][1], None]]).score
    assert tm.corpus_bleu(hyps, refs) == pytest.approx(expected)
    single = sacrebleu.corpus_bleu(hyps, [["the cat sat on a mat", "the dog runs in a park today"]]).score
    assert tm.corpus_bleu(hyps, ["the cat sat on a mat", "the dog runs in a park today"]) == pytest.approx(
        single
    )


def test_rouge_l_by_hand():
    # LCS("the cat sat on the mat", "the cat is on the mat") = "the cat on the mat" = 5 of 6 tokens each side
    assert tm.rouge_l(["the cat sat on the mat"], [["the cat is on the mat"]]) == pytest.approx(5 / 6)
    # the best reference counts
    assert tm.rouge_l(["the cat sat on the mat"], [["a dog", "the cat sat on the mat"]]) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------------
# perplexity


@pytest.fixture(scope="module")
def tiny():
    from lmcontrol.models import tiny_lm

    return tiny_lm()


def test_perplexity_equals_manual_loss(tiny):
    import torch

    from lmcontrol.eval.fluency import FluencyConfig, perplexities

    prompts = ["Hello there", "A much longer prompt that needs left padding in the batch"]
    conts = [" my dear friend, how are you?", " ok"]
    got = perplexities(prompts, conts, FluencyConfig(batch_size=2), lm=tiny)
    for prompt, cont, value in zip(prompts, conts, got, strict=True):
        ctx = tiny.tokenizer(prompt)["input_ids"]
        ids = ctx + tiny.tokenizer(cont, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = tiny.model(torch.tensor([ids])).logits[0]  # (T, V)
        loss = torch.nn.functional.cross_entropy(logits[len(ctx) - 1 : -1], torch.tensor(ids[len(ctx) :]))
        assert value == pytest.approx(math.exp(loss.item()), rel=1e-4)
    assert math.isnan(perplexities(["Hi"], [""], lm=tiny)[0])


# ---------------------------------------------------------------------------------------------------------
# probes and rewards


def test_probe_refuses_one_class(tmp_path: Path):
    from lmcontrol.eval.probes import ProbeTrainConfig, train_probe

    data = tmp_path / "one.jsonl"
    data.write_text("".join(json.dumps({"text": f"text {i}", "label": 1}) + "\n" for i in range(10)))
    with pytest.raises(LMControlError, match="one class"):
        train_probe(ProbeTrainConfig(data=str(data)))


def test_probe_matches_sklearn_and_round_trips(tmp_path: Path):
    import torch
    from sklearn.linear_model import LogisticRegression

    from lmcontrol.eval.probes import LinearProbe, ProbeConfig

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    for n_classes in (2, 3):
        y = rng.integers(0, n_classes, size=60)
        clf = LogisticRegression(max_iter=1000).fit(x, y)
        labels = tuple(f"c{i}" for i in range(n_classes))
        cfg = ProbeConfig(
            labels=labels, label_values=tuple(map(str, range(n_classes))), input_dim=8, encoder="all-MiniLM-L6-v2"
        )
        probe = LinearProbe.from_logistic_regression(cfg, clf.coef_, clf.intercept_)
        probs = probe(torch.from_numpy(x)).softmax(-1).detach().numpy()
        np.testing.assert_allclose(probs, clf.predict_proba(x), atol=1e-5)
    probe.save_pretrained(tmp_path / "p", base_model="all-MiniLM-L6-v2", hidden_size=8, half=False)
    again = LinearProbe.from_pretrained(tmp_path / "p")
    assert again.config == probe.config
    assert again.label_index("c2") == 2 and again.label_index("1") == 1
    with pytest.raises(LMControlError, match="no label"):
        again.label_index("nope")


def test_unknown_reward_lists_known():
    from lmcontrol.eval.reward import load_reward

    with pytest.raises(LMControlError, match=r"unknown reward .nope. \(known: harmless, hh, sentiment, hf:"):
        load_reward("nope")


def test_py_reward_and_length_check():
    from lmcontrol.eval.reward import load_reward

    fn = load_reward("py:operator:add")  # any callable; its output length is checked
    with pytest.raises(LMControlError, match="returned"):
        fn(["a", "b"], ["c", "d"])
    with pytest.raises(LMControlError, match="could not be imported"):
        load_reward("py:lmcontrol:missing_function")


def test_last_human_turn():
    from lmcontrol.eval.reward import last_human_turn

    dialogue = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how do I bake bread?\n\nAssistant:"
    assert last_human_turn(dialogue) == "how do I bake bread?"
    assert last_human_turn("plain prompt ") == "plain prompt"


def test_bt_reward_model_scores_features():
    import torch

    from lmcontrol.eval.reward import BTRewardModel, RewardConfig

    model = BTRewardModel(RewardConfig(input_dim=4, hidden=3, heads=2)).eval()
    f = model.features(torch.randn(5, 4), torch.randn(5, 4), torch.ones(5, 1))  # (5, 17)
    assert f.shape == (5, 17)
    mean = model(f)
    torch.testing.assert_close(mean, (model(f, head=0) + model(f, head=1)) / 2)


# ---------------------------------------------------------------------------------------------------------
# the metric registry and the eval CLI


def test_parse_metrics_unknown_lists_known():
    from lmcontrol.eval.suite import parse_metrics

    assert parse_metrics("ppl, reward:harmless") == [("ppl", None), ("reward", "harmless")]
    with pytest.raises(LMControlError, match=r"unknown metric .bogus. \(known: .*dist.*ppl"):
        parse_metrics("ppl,bogus")


def test_evaluate_groups_and_timing_overhead():
    from lmcontrol.eval.suite import evaluate

    rows = [{"prompt": "p", "continuation": "a b a b", "seconds": 1.0, "tokens": 4}]
    slow = [{"prompt": "p", "continuation": "a b c d", "seconds": 3.0, "tokens": 4}]
    res = evaluate({"base": rows, "slow": slow}, "dist,timing")
    assert res["base"]["dist-2"] == pytest.approx(2 / 3)
    assert res["slow"]["overhead"] == pytest.approx(3.0)
    assert res["base"]["tokens/s"] == pytest.approx(4.0)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_eval_cli_scores_and_writes_json(tmp_path: Path, capsys):
    rows = [
        {"method": "a", "prompt": "p1", "continuation": "the cat sat", "reference": "the cat sat"},
        {
            "method": "a",
            "prompt": "p2",
            "continuation": "a dog ran",
            "reference": ["the dog ran", "a dog ran"],
        },
        {"method": "b", "prompt": "p1", "continuation": "x y x y", "reference": "the cat sat"},
    ]
    out = tmp_path / "res.json"
    code, stdout, err = _cli(
        [
            "eval",
            str(_write(tmp_path / "g.jsonl", rows)),
            "--metrics",
            "dist,diversity,bleu,rouge",
            "-o",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    res = json.loads(out.read_text())["methods"]
    assert list(res) == ["a", "b"]
    assert res["a"]["bleu"] == pytest.approx(
        tm.corpus_bleu(["the cat sat", "a dog ran"], [["the cat sat"], ["the dog ran", "a dog ran"]])
    )
    assert res["b"]["rep-2"] == pytest.approx(tm.rep_n("x y x y", 2))
    assert "rouge-l" in stdout


@pytest.mark.parametrize(
    "rows, metrics, message",
    [
        ([{"prompt": "p"}], "dist", "no 'continuation'"),
        ([{"continuation": "c"}], "dist", "no 'prompt'"),
        ([{"prompt": "p", "continuation": "c"}], "dist,bogus", "unknown metric 'bogus'"),
        ([{"prompt": "p", "continuation": "c"}], "bleu", "needs a 'reference'"),
        ([], "dist", "has no rows"),
    ],
)
def test_eval_cli_bad_input_is_one_line_exit_2(tmp_path: Path, capsys, rows, metrics, message):
    path = _write(tmp_path / "bad.jsonl", rows)
    code, _, err = _cli(["eval", str(path), "--metrics", metrics], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_eval_cli_missing_file(tmp_path: Path, capsys):
    code, _, err = _cli(["eval", str(tmp_path / "nope.jsonl")], capsys)
    assert code == 2 and err.count("\n") == 1 and "not found" in err
