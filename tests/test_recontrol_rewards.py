"""RE-Control for text attributes: per-prompt baselines, Monte-Carlo targets, prompt-level splits, the
attribute rewards and the bench statistics (paired differences, win rates, standard errors)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lmcontrol import LMControlError
from lmcontrol.bench.stats import mean_se
from lmcontrol.models import tiny_lm
from lmcontrol.recontrol.bench import (
    attribute_stats,
    make_attribute_suite,
    paired_stats,
    win_indicators,
)
from lmcontrol.recontrol.config import RolloutConfig, ValueNetworkConfig, ValueTrainConfig
from lmcontrol.recontrol.rollouts import collect_rollouts, label_rollouts, load_rollouts
from lmcontrol.recontrol.train import (
    bellman_data,
    bellman_targets,
    prompt_baseline,
    split_rows,
    train_value_network,
    training_rewards,
)
from lmcontrol.recontrol.tune import choose, setting_spec
from lmcontrol.training import TrainConfig

D = 32


def test_prompt_baseline_removes_the_prompt_mean():
    prompts = ["a", "a", "b", "b", "b"]
    adv = prompt_baseline(prompts, torch.tensor([1.0, 3.0, 0.0, 0.0, 3.0]))
    assert torch.allclose(adv, torch.tensor([-1.0, 1.0, -1.0, -1.0, 2.0]))
    # a reward that only depends on the prompt leaves nothing to learn
    assert torch.allclose(prompt_baseline(prompts, torch.tensor([5.0, 5.0, 2.0, 2.0, 2.0])), torch.zeros(5))
    with pytest.raises(LMControlError):
        prompt_baseline(["a"], torch.tensor([1.0, 2.0]))


def test_mc_targets_are_the_final_reward_for_every_state():
    data = bellman_data(torch.eye(4, D), torch.tensor([0, 3, 4]), torch.tensor([2.0, -1.0]))
    value = torch.nn.Linear(D, 1)
    value_fn = lambda h: value(h).squeeze(-1)  # noqa: E731
    assert bellman_targets(value_fn, data, torch.arange(4), "mc").tolist() == [2.0, 2.0, 2.0, -1.0]
    td = bellman_targets(value_fn, data, torch.arange(4), "bellman")
    assert td[2] == 2.0 and td[3] == -1.0  # final states get r; inner states bootstrap
    assert torch.allclose(td[:2], value_fn(torch.eye(4, D)[1:3]).detach())


def test_split_rows_keeps_prompts_on_one_side():
    prompts = [p for p in "abcdefghij" for _ in range(4)]
    train, val = split_rows(len(prompts), 0.2, seed=1, groups=prompts)
    assert len(train) + len(val) == 40 and len(val) == 8
    assert not {prompts[i] for i in val.tolist()} & {prompts[i] for i in train.tolist()}
    train, val = split_rows(10, 0.0)
    assert len(train) == 10 and len(val) == 0


def test_value_train_config_validates():
    with pytest.raises(LMControlError, match="target"):
        ValueTrainConfig(target="td-lambda")
    with pytest.raises(LMControlError, match="baseline"):
        ValueTrainConfig(baseline="global")
    with pytest.raises(LMControlError, match="top_p"):
        RolloutConfig(top_p=0.0)


def test_advantage_value_learns_the_response_not_the_prompt(tmp_path: Path):
    """Rollouts whose reward = prompt constant + response quality: with baseline=prompt the value net ranks
    a prompt's rollouts by response quality; its targets carry no prompt constant."""
    torch.manual_seed(0)
    lm = tiny_lm(hidden_size=D)
    prompts = ["alpha", "beta question", "gamma, please", "delta?"]
    cfg = RolloutConfig(max_new_tokens=4, batch_size=8, temperature=1.0, samples=4)
    collect_rollouts(lm, prompts, tmp_path / "ro", cfg, shard_prompts=8)
    offset = {p: 10.0 * i for i, p in enumerate(prompts)}
    label_rollouts(tmp_path / "ro", "r", lambda ps, rs: [offset[p] + len(r) for p, r in zip(ps, rs, strict=True)])
    ro = load_rollouts(tmp_path / "ro")
    assert len(ro.rows) == 16
    adv = training_rewards(ro, "r", "prompt")
    raw = ro.rewards("r")
    for p in prompts:
        rows = [i for i, r in enumerate(ro.rows) if r["prompt"] == p]
        assert abs(float(adv[rows].sum())) < 1e-4  # advantages of a prompt sum to 0
        assert torch.allclose(adv[rows], raw[rows] - raw[rows].mean())
    _, metrics, _ = train_value_network(
        ro,
        "r",
        ValueNetworkConfig(hidden_size=D, width=16, depth=2),
        TrainConfig(steps=30, lr=1e-3, progress=False, checkpoint_every=30),
        tmp_path / "work",
        value_train=ValueTrainConfig(target="mc", baseline="prompt", val_fraction=0.25),
        batch_size=16,
    )
    assert metrics["baseline"] == "prompt" and metrics["value_target"] == "mc"
    assert metrics["prompts"] == 4 and math.isfinite(metrics["val_mc_loss"])
    assert metrics["target_std"] < metrics["reward_std"]  # the prompt constants (0..30) are gone


def test_mean_se_and_paired_stats():
    m, se = mean_se([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and math.isclose(se, math.sqrt(5 / 3 / 4))
    assert math.isnan(mean_se([1.0])[1]) and math.isnan(mean_se([])[0])
    assert win_indicators([2.0, 1.0, 0.0], [1.0, 1.0, 1.0]) == [1.0, 0.5, 0.0]
    st = paired_stats([2.0, 3.0, 4.0, 6.0], [1.0, 1.0, 1.0, 1.0], "r")
    assert st["r_delta"] == 2.75 and st["r_win"] == 1.0 and st["r_win_se"] == 0.0
    assert math.isclose(st["r_z"], st["r_delta"] / st["r_delta_se"])


def test_attribute_stats_on_hand_made_responses(monkeypatch):
    import lmcontrol.eval.rewards_text as rt

    monkeypatch.setattr(rt, "sentiment_probe", lambda p, r: [float(x.count("good")) for x in r])
    monkeypatch.setattr(rt, "sentiment_vader", lambda p, r: [0.5 if "good" in x else 0.0 for x in r])
    by_method = {
        "base": {"p1": "bad", "p2": "good", "p3": "meh"},
        "steer": {"p1": "good", "p2": "good good", "p3": "meh"},
    }
    stats = attribute_stats("sentiment", by_method)
    assert stats["base"]["reward"] == pytest.approx(1 / 3) and stats["base"]["reward_win"] == 0.5
    s = stats["steer"]
    assert s["reward"] == 1.0 and s["reward_delta"] == pytest.approx(2 / 3)
    assert s["reward_win"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert s["judge_win"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert s["success"] == pytest.approx(2 / 3)  # vader > 0.05


def test_attribute_suite_finalize_writes_statistics(tmp_path: Path, monkeypatch):
    import lmcontrol.eval.rewards_text as rt

    monkeypatch.setattr(rt, "harmless_probe", lambda p, r: [1.0 - 0.1 * len(x) for x in r])
    monkeypatch.setattr(rt, "harmless_bilstm", lambda p, r: [1.0 if len(x) < 3 else 0.0 for x in r])
    suite = make_attribute_suite("harmless")
    assert suite.name == "recontrol-harmless" and suite.methods[0].name == "base"
    rows = [
        {"method": m, "prompt": p, "continuation": c, "sample": 0}
        for m, texts in {"base": ["aaaa", "bb"], "recontrol": ["a", "bb"]}.items()
        for p, c in zip(["x", "y"], texts, strict=True)
    ]
    (tmp_path / "generations.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    results = suite.finalize({"methods": {"base": {"ppl": 2.0}, "recontrol": {"ppl": 2.1}}}, tmp_path)
    rc = results["methods"]["recontrol"]
    assert rc["ppl"] == 2.1 and rc["reward_delta"] == pytest.approx(0.15) and rc["judge_win"] == 0.75
    assert results["attribute"]["judge"].endswith("harmless_bilstm")


def test_unknown_attribute_and_tuning_settings():
    from lmcontrol.eval.rewards_text import attribute, reward_fn

    with pytest.raises(LMControlError, match="known: sentiment, harmless"):
        attribute("formality")
    with pytest.raises(LMControlError):
        reward_fn("nope")
    assert setting_spec("recontrol:8x5", "D") == "recontrol:D,step_size=8.0,steps=5"
    assert setting_spec("static-re:2", "D") == "static-re:D,scale=2.0"
    with pytest.raises(LMControlError):
        setting_spec("recontrol:8", "D")
    results = [
        {"setting": "base", "reward": 0.1, "diversity": 0.9, "ppl": 3.0},
        {"setting": "recontrol:4x5", "reward": 0.2, "diversity": 0.88, "ppl": 3.1},
        {"setting": "recontrol:16x5", "reward": 0.5, "diversity": 0.5, "ppl": 3.1},  # too repetitive
    ]
    assert choose(results, "recontrol", 0.1)["setting"] == "recontrol:4x5"
    assert choose(results, "static-re", 0.1) is None


def test_vader_judge_scores_sentiment():
    from lmcontrol.eval.rewards_text import sentiment_vader

    good, bad = sentiment_vader([""] * 2, ["What a wonderful, lovely day!", "This is awful and I hate it."])
    assert good > 0.5 and bad < -0.5
