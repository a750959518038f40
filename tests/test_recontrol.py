"""RE-Control: value net, Bellman targets, rollout states, the control and its baselines (tiny model)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lmcontrol import LMControlError
from lmcontrol.artifacts import ArtifactError
from lmcontrol.controls import Control, StepContext, parse_control_spec
from lmcontrol.generation import GenerationConfig, generate, tokenize_prompts
from lmcontrol.models import tiny_lm
from lmcontrol.recontrol.baselines import (
    BestOfN,
    ControlledDecoding,
    StaticEdit,
    SystemPrompt,
    static_direction,
)
from lmcontrol.recontrol.config import ReControlConfig, ValueNetworkConfig
from lmcontrol.recontrol.control import ReControl, control_signal, recontrol_from_spec
from lmcontrol.recontrol.model import ValueNetwork
from lmcontrol.recontrol.rollouts import StateRecorder, collect_rollouts, label_rollouts, load_rollouts
from lmcontrol.recontrol.train import bellman_data, bellman_loss, bellman_targets, train_value_network
from lmcontrol.training import TrainConfig

D = 32
PROMPTS = ["Tell me a joke.", "How do I bake bread at home, step by step?", "Hi"]


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return tiny_lm(hidden_size=D)


def _value(seed: int = 0, **kw) -> ValueNetwork:
    torch.manual_seed(seed)
    v = ValueNetwork(ValueNetworkConfig(hidden_size=D, width=16, **kw))
    v.base_model, v.base_hidden_size = "tiny", D
    return v


def test_value_network_shapes():
    for depth in (2, 3):
        v = _value(depth=depth)
        assert v(torch.randn(5, D)).shape == (5,)
        assert v(torch.randn(2, 7, D)).shape == (2, 7)
    with pytest.raises(LMControlError):
        ValueNetworkConfig(depth=4)


def test_value_network_linear_skip_adds_a_shared_direction(tmp_path):
    """V = w . x + MLP(x): with the MLP's last layer zeroed, the gradient is w / std at every state; the skip
    weight survives save / load."""
    v = _value(linear_skip=True)
    with torch.no_grad():
        v.mlp[-1].weight.zero_()
        v.mlp[-1].bias.zero_()
    h = torch.randn(3, D, requires_grad=True)
    v(h).sum().backward()
    assert torch.allclose(h.grad, v.skip.weight.expand(3, D) / v.h_std, atol=1e-6)
    v.save_pretrained(tmp_path / "v", base_model="tiny", hidden_size=D)
    back = ValueNetwork.from_pretrained(tmp_path / "v")
    x = torch.randn(4, D)
    assert back.config.linear_skip and torch.allclose(back(x), v(x).detach(), atol=1e-2)  # fp16 on disk


def test_bellman_targets_hand_made_rollout():
    # one 3-token rollout s0, s1, s2 with reward 2.0, and a 1-token rollout s3 with reward -1.0
    states = torch.eye(4, D)
    data = bellman_data(states, torch.tensor([0, 3, 4]), torch.tensor([2.0, -1.0]))
    assert data.next_index.tolist() == [1, 2, -1, -1]
    v = _value()
    with torch.no_grad():
        vs = v(states)
    targets = bellman_targets(v, data, torch.arange(4))
    assert torch.allclose(targets, torch.stack([vs[1], vs[2], torch.tensor(2.0), torch.tensor(-1.0)]))
    loss = bellman_loss(v, data, torch.arange(4))
    expected = ((vs - targets) ** 2).mean()
    assert torch.allclose(loss, expected)
    loss.backward()  # stop-gradient: V(s_{t+1}) contributes no gradient through the target
    assert all(p.grad is not None for p in v.parameters())


class _EndRowEarly(Control):
    """Forces EOS on the call's row 1 from step 2, so that row leaves the batch while the others go on."""

    name = "end-row-early"

    def process_logits(self, logits, ctx):
        eos = ctx.lm.tokenizer.eos_token_id
        for j, index in enumerate(ctx.rows.prompt_index):
            if index == 1 and ctx.step >= 2:
                logits[j] = float("-inf")
                logits[j, eos] = 0.0
        return logits


@pytest.mark.parametrize("early", [False, True])
def test_recorded_states_match_teacher_forcing(lm, early):
    """Each row's states are those a teacher-forced pass gives, also when a row finishes first and the engine
    moves the others into its slot."""
    rec = StateRecorder()
    controls = [rec, _EndRowEarly()] if early else [rec]
    out = generate(lm, PROMPTS, GenerationConfig(max_new_tokens=6), controls=controls)
    rows = rec.per_row()
    if early:
        assert rows[1].shape[0] == 3 and rows[0].shape[0] >= 4
    for i, p in enumerate(PROMPTS):
        ids = out.token_ids[i]
        assert rows[i].shape[0] in (len(ids), len(ids) + 1)  # +1 when the row ended with EOS
        text = lm.format_prompt(p)
        pid, _ = tokenize_prompts(lm, [text], chat=True)
        full = torch.cat([pid, torch.tensor([ids[: rows[i].shape[0] - 1]], dtype=torch.long)], 1)
        with torch.no_grad():
            h = lm.model.model(input_ids=full).last_hidden_state[0]  # (T, d)
        ref = h[pid.shape[1] - 1 :]  # states that produce each new token
        assert torch.allclose(rows[i].float(), ref.half().float(), atol=2e-2), i


def test_rollouts_roundtrip_and_training(lm, tmp_path: Path):
    from lmcontrol.recontrol.config import RolloutConfig

    cfg = RolloutConfig(max_new_tokens=5, batch_size=2, temperature=1.0)
    collect_rollouts(lm, PROMPTS * 2, tmp_path / "ro", cfg, shard_prompts=4)
    assert label_rollouts(tmp_path / "ro", "len", lambda p, r: [float(len(x)) for x in r]) == 6
    ro = load_rollouts(tmp_path / "ro")
    assert len(ro.rows) == 6 and int(ro.offsets[-1]) == ro.states.shape[0]
    assert [r["n_states"] for r in ro.rows] == ro.offsets.diff().tolist()
    value, metrics, _ = train_value_network(
        ro,
        "len",
        ValueNetworkConfig(hidden_size=D, width=16),
        TrainConfig(steps=20, lr=1e-3, progress=False, checkpoint_every=10),
        tmp_path / "work",
        batch_size=8,
    )
    assert math.isfinite(metrics["val_bellman_loss"])
    d = static_direction(ro.states, ro.offsets, ro.rewards("len"))
    assert d.shape == (D,) and torch.isfinite(d).all()


def test_static_direction_by_hand():
    """Mean state of the top-quartile responses minus that of the bottom quartile (states flattened per row)."""
    states = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0], [9.0, 9.0], [0.0, 2.0], [0.0, 4.0]])  # (N, d)
    offsets = torch.tensor([0, 2, 3, 4, 6])  # rows: [0, 1], [2], [3], [4, 5]
    rewards = torch.tensor([0.0, 1.0, 2.0, 3.0])  # quartiles 0.75 / 2.25: row 3 is top, row 0 bottom
    want = torch.tensor([0.0, 3.0]) - torch.tensor([2.0, 0.0])
    torch.testing.assert_close(static_direction(states, offsets, rewards), want)
    flipped = static_direction(states, offsets, rewards.flip(0))
    torch.testing.assert_close(flipped, -want)


def test_control_signal_raises_value():
    v = _value()
    h = torch.randn(4, D)
    u = control_signal(v, h, step_size=0.5, steps=10)
    with torch.no_grad():
        assert bool((v(h + u) > v(h)).all())
    assert torch.equal(control_signal(v, h, step_size=0.0, steps=10), torch.zeros_like(h))
    assert torch.equal(control_signal(v, h, step_size=0.5, steps=0), torch.zeros_like(h))
    assert not any(p.grad is not None for p in v.parameters())


def test_recontrol_raises_value_during_generation(lm):
    v = _value()
    rc = ReControl(v, ReControlConfig(step_size=0.5, steps=5))
    rc.record_gain = True
    generate(lm, PROMPTS, GenerationConfig(max_new_tokens=4), controls=[rc])
    assert rc.value_gain and all(g > 0 for g in rc.value_gain)


class _Zero(Control):
    """A zero control through the same code path: control_signal with no steps."""

    def __init__(self, v: ValueNetwork) -> None:
        self.v = v
        self.hidden_site = "final"

    def edit_hidden(self, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return (h.float() + control_signal(self.v, h, 0.0, 0)).to(h.dtype)


def test_zero_control_is_identity(lm):
    cfg = GenerationConfig(max_new_tokens=8)
    base = generate(lm, PROMPTS, cfg)
    assert generate(lm, PROMPTS, cfg, controls=[_Zero(_value())]).token_ids == base.token_ids
    flat = _value()
    with torch.no_grad():
        flat.mlp[-1].weight.zero_()  # grad V = 0 everywhere: the full ReControl path must change nothing
    rc = ReControl(flat, ReControlConfig(step_size=1.0, steps=3))
    assert generate(lm, PROMPTS, cfg, controls=[rc]).token_ids == base.token_ids
    assert generate(lm, PROMPTS, cfg, controls=[StaticEdit(torch.zeros(D))]).token_ids == base.token_ids


@pytest.mark.parametrize(
    "bad", ["step_size=0", "step_size=-1", "step_size=nan", "steps=0", "steps=-2", "steps=1.5", "foo=1"]
)
def test_bad_specs(lm, tmp_path: Path, bad: str):
    v = _value()
    v.save_pretrained(tmp_path / "v", base_model=lm.info.name, hidden_size=D)
    recontrol_from_spec(parse_control_spec(f"recontrol:{tmp_path / 'v'},steps=2"), lm)  # a good one works
    with pytest.raises(LMControlError):
        recontrol_from_spec(parse_control_spec(f"recontrol:{tmp_path / 'v'},{bad}"), lm)
    with pytest.raises(LMControlError):
        ReControlConfig(step_size=float("nan"))


def test_mismatched_artifact_refused(lm, tmp_path: Path):
    big = ValueNetwork(ValueNetworkConfig(hidden_size=64, width=8))
    big.save_pretrained(tmp_path / "big", base_model=lm.info.name, hidden_size=64)
    with pytest.raises(ArtifactError, match="hidden size 64 != 32"):
        recontrol_from_spec(parse_control_spec(f"recontrol:{tmp_path / 'big'}"), lm)
    other = _value()
    other.save_pretrained(tmp_path / "other", base_model="another-model", hidden_size=D)
    with pytest.raises(ArtifactError, match="another-model"):
        recontrol_from_spec(parse_control_spec(f"recontrol:{tmp_path / 'other'}"), lm)


def _manual_cd_first_token(lm, value, prompt: str, topk: int, beta, system=None) -> int:
    """The first token controlled decoding must pick: the top-k next tokens of the plain model, each scored by
    V(state it leads to) (cd: V decides, the LM breaks ties) or logit + beta V (cd-prefix)."""
    from lmcontrol import hf_adapter as hf

    text = lm.format_prompt(prompt, system=system)
    ids = torch.tensor([lm.tokenizer(text, add_special_tokens=False)["input_ids"]])  # (1, T)
    with torch.no_grad():
        logits = lm.model(input_ids=ids).logits[0, -1].float()  # (V,)
        top = logits.topk(topk)
        cand = torch.cat([ids.repeat(topk, 1), top.indices[:, None]], 1)  # (k, T + 1)
        h_next = hf.decoder(lm.model)(input_ids=cand).last_hidden_state[:, -1]  # (k, d)
        v = value(h_next).float()  # (k,)
    score = v + 1e-3 * top.values.log_softmax(-1) if beta is None else top.values + beta * v
    return int(top.indices[score.argmax()])


@pytest.mark.parametrize("beta", [None, 1.0])
def test_controlled_decoding_reranks_top_k_by_value(lm, beta):
    """cd / cd-prefix pick, among the LM's top-k, the token the value of its next state ranks first — exactly the
    choice computed by hand from plain forwards; with a big enough beta the choice differs from greedy."""
    v = _value(seed=0)
    cfg = GenerationConfig(max_new_tokens=1)
    out = generate(lm, PROMPTS, cfg, controls=[ControlledDecoding(v, topk=4, beta=beta)])
    want = [_manual_cd_first_token(lm, v, p, 4, beta) for p in PROMPTS]
    assert [ids[0] for ids in out.token_ids] == want
    # V must be able to overturn the LM's favourite (else the test above could pass by greedy decoding)
    greedy = [ids[0] for ids in generate(lm, PROMPTS, cfg).token_ids]
    strong = generate(lm, PROMPTS, cfg, controls=[ControlledDecoding(v, topk=4, beta=1e4)])
    assert [ids[0] for ids in strong.token_ids] != greedy


def test_baselines_compose(lm):
    """A system prompt composes with controlled decoding (cd sees the system-formatted prompt), and best-of-N
    keeps the candidate its reward ranks first."""
    v = _value(seed=0)
    cfg = GenerationConfig(max_new_tokens=1)
    out = generate(lm, PROMPTS, cfg, controls=[SystemPrompt("Be kind."), ControlledDecoding(v, topk=4)])
    want = [_manual_cd_first_token(lm, v, p, 4, None, system="Be kind.") for p in PROMPTS]
    assert [ids[0] for ids in out.token_ids] == want
    bon = BestOfN(3, lambda p, r: [float(len(x)) for x in r])
    out = generate(lm, PROMPTS, GenerationConfig(max_new_tokens=4), controls=[bon])
    assert out.candidates is not None
    assert all(
        len(t) == max(len(c) for c in cands) for t, cands in zip(out.texts, out.candidates, strict=True)
    )


@pytest.mark.slow
def test_committed_artifact_on_embedded_model():
    from lmcontrol.models import load_lm
    from lmcontrol.settings import ARTIFACTS_DIR

    path = ARTIFACTS_DIR / "recontrol-hh"
    if not (path / "config.json").is_file():
        pytest.skip("artifacts/recontrol-hh not committed yet")
    lm = load_lm(None)
    rc = recontrol_from_spec(parse_control_spec(f"recontrol:{path}"), lm)
    rc.record_gain = True
    prompts = ["How can I steal from a store without getting caught?", "What is a good way to relax?"]
    cfg = GenerationConfig(max_new_tokens=12)
    out = generate(lm, prompts, cfg, controls=[rc])
    assert all(t.strip() for t in out.texts)
    assert rc.value_gain and sum(rc.value_gain) / len(rc.value_gain) > 0
