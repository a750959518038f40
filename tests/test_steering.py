"""The spine's generic controls (lmcontrol.steering) and the method controls built on them (tiny model)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmcontrol import LMControlError
from lmcontrol.controls import Rows, StepContext
from lmcontrol.generation import GenerationConfig, generate
from lmcontrol.steering import BestOfN, SteeringVector, SystemPrompt, TopKRescoring, continuation_texts

GREEDY = GenerationConfig(max_new_tokens=8, chat=False, temperature=0.0)
PROMPTS = ["hello there", "the cat"]


class _Value(nn.Module):
    """A fixed linear 'value network' V(s) = s · w (B, k, d) -> (B, k)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1.0, 1.0, d))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s.float() @ self.w


def _ctx(lm, input_ids: torch.Tensor, step: int) -> StepContext:  # noqa: ANN001
    b = input_ids.shape[0]
    rows = Rows([""] * b, [""] * b, list(range(b)), [{} for _ in range(b)])
    finished = torch.zeros(b, dtype=torch.bool)
    return StepContext(step=step, lm=lm, rows=rows, finished=finished, token_lists=input_ids.tolist())


def test_top_k_rescoring_keeps_k_candidates_and_adds_the_weighted_score(tiny) -> None:
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    bonus = torch.tensor([[0.0, 10.0]])  # favours the second-best token
    ctl = TopKRescoring(lambda cand, ctx: bonus, top_k=2, weight=0.5)
    out = ctl.process_logits(logits, _ctx(tiny, torch.zeros(1, 1, dtype=torch.long), 0))
    assert torch.isinf(out[0, 2:]).all() and out[0, :2].tolist() == [4.0, 8.0]
    logprobs = TopKRescoring(lambda cand, ctx: torch.zeros(1, 2), top_k=2, lm_term="logprobs")
    out = logprobs.process_logits(logits, _ctx(tiny, torch.zeros(1, 1, dtype=torch.long), 0))
    assert torch.allclose(out[0, :2], logits.log_softmax(-1)[0, :2])
    tie = TopKRescoring(lambda cand, ctx: torch.tensor([[1.0, 1.0]]), top_k=2, lm_term="tiebreak")
    out = tie.process_logits(logits, _ctx(tiny, torch.zeros(1, 1, dtype=torch.long), 0))
    assert out[0, 0] > out[0, 1] and float(out[0, 0] - out[0, 1]) < 1e-2  # the score decides, the LM breaks ties
    always = TopKRescoring(lambda cand, ctx: torch.zeros(cand.shape), top_k=1, always=(4,))
    out = always.process_logits(logits, _ctx(tiny, torch.zeros(1, 1, dtype=torch.long), 0))
    assert out[0].isfinite().tolist() == [True, False, False, False, True]
    with pytest.raises(LMControlError, match="lm_term"):
        TopKRescoring(lambda c, x: c, top_k=2, lm_term="raw")


def test_continuation_texts_read_only_the_new_tokens(tiny) -> None:
    tok = tiny.tokenizer
    prompt = tok("the cat", add_special_tokens=False)["input_ids"]
    new = tok(" sat", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + new])
    cand = torch.tensor([tok(" on", add_special_tokens=False)["input_ids"][:1]])
    assert continuation_texts(cand, _ctx(tiny, ids, len(new))) == [tok.decode(new + cand[0].tolist())]


def test_controlled_decoding_outputs_are_pinned(tiny) -> None:
    """RE-Control's CD baselines on the shared TopKRescoring: greedy outputs token-identical to before the move."""
    from lmcontrol.recontrol.baselines import ControlledDecoding

    value = _Value(tiny.info.hidden_size)
    hard = generate(tiny, PROMPTS, GREEDY, [ControlledDecoding(value, topk=3)]).token_ids
    soft = generate(tiny, PROMPTS, GREEDY, [ControlledDecoding(value, topk=3, beta=0.2)]).token_ids
    base = generate(tiny, PROMPTS, GREEDY).token_ids
    assert hard != base and soft != base and soft != hard
    assert hard == PINNED_CD and soft == PINNED_CD_PREFIX


def test_steering_vector_from_contrast_is_pinned(tiny) -> None:
    sv = SteeringVector.from_contrast(tiny, ["good day", "lovely time"], ["bad day", "awful time"], layer=1, scale=50.0)
    assert sv.hidden_site == "layer:1" and sv.direction.shape == (tiny.info.hidden_size,)
    assert float(sv.direction.norm()) == pytest.approx(PINNED_SV_NORM, rel=1e-5)
    out = generate(tiny, PROMPTS, GREEDY, [sv]).token_ids
    assert out != generate(tiny, PROMPTS, GREEDY).token_ids
    zero = SteeringVector(torch.zeros(tiny.info.hidden_size), scale=3.0)  # a zero direction changes nothing
    assert generate(tiny, PROMPTS, GREEDY, [zero]).token_ids == generate(tiny, PROMPTS, GREEDY).token_ids


def test_best_of_n_keeps_the_highest_reward() -> None:
    bon = BestOfN(3, lambda prompts, texts: [float(len(t)) for t in texts])
    assert bon.select(["a", "b"], [["xx", "xxxx", "x"], ["yyy", "y", "yy"]]) == [1, 0]
    assert SystemPrompt("be brief").system_prompt() == "be brief"


def test_system_and_best_of_are_registered_by_the_spine() -> None:
    from lmcontrol import registry
    from lmcontrol.controls import build_control, parse_control_spec

    for kind in ("system", "best-of"):
        assert registry.CONTROLS.get(kind).source == "lmcontrol.steering_plugin"
    ctl = build_control(parse_control_spec("system:Answer in French, please."), None)
    assert isinstance(ctl, SystemPrompt) and ctl.text == "Answer in French, please."


PINNED_CD = [[21927, 45385, 45385, 45385, 25463, 25463, 25463, 25463], [31423] * 7 + [7672]]
PINNED_CD_PREFIX = [[21927, 45385, 45385, 45385, 25463, 25463, 25463, 25463], [31423] * 8]
PINNED_SV_NORM = 0.024787994101643562
