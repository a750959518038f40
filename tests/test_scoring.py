"""Teacher-forced scoring: equal to a plain HF forward, to what the decoding loop assigns, batch-invariant."""

from __future__ import annotations

import copy

import pytest
import torch

from lmcontrol import LMControlError
from lmcontrol import hf_adapter as hf
from lmcontrol.controls import Control, SoftPrompt
from lmcontrol.generation import GenerationConfig, generate, tokenize_prompts
from lmcontrol.scoring import collate, encode, score, target_loss, target_token_logprobs

PROMPTS = ["Write one sentence about the sea.", "Hi", "Tell me a long story about a cat and a dog, please."]
TARGETS = ["The sea is wide and deep.", "Hello there! How can I help?", "Once"]


def manual_logprobs(lm, prompt: str, target, *, chat=True, system=None, kv=None) -> torch.Tensor:
    """log p(y_t | x, y_<t) from one unpadded HF forward over [prompt | target] (optionally behind a KV prefix)."""
    text = lm.format_prompt(prompt, chat=chat, system=system)
    p_ids = lm.tokenizer(text, add_special_tokens=not (chat and lm.has_chat_template))["input_ids"]
    t_ids = lm.tokenizer(target, add_special_tokens=False)["input_ids"] if isinstance(target, str) else list(target)
    ids = torch.tensor([p_ids + t_ids])  # (1, T)
    kwargs = {}
    if kv is not None:
        m = kv[0][0].shape[2]
        kwargs = {
            "past_key_values": hf.make_cache(lm.model, kv),
            "attention_mask": torch.ones(1, m + ids.shape[1], dtype=torch.long),
            "position_ids": torch.arange(ids.shape[1])[None],
        }
    with torch.no_grad():
        logits = lm.model(input_ids=ids, **kwargs).logits.float()  # (1, T, V)
    logp = logits[0, len(p_ids) - 1 : -1].log_softmax(-1)  # (R, V): position t predicts t+1
    return logp.gather(1, torch.tensor(t_ids)[:, None]).squeeze(1)


def _kv(lm, batch: int, m: int, seed: int = 0, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, lm.info.num_kv_heads, m, lm.info.head_dim)
    return [(torch.randn(shape, generator=g) * scale, torch.randn(shape, generator=g) * scale)
            for _ in range(lm.info.num_layers)]


def test_score_equals_plain_hf_forward(tiny):
    out = score(tiny, PROMPTS, TARGETS)
    for i, (p, y) in enumerate(zip(PROMPTS, TARGETS, strict=True)):
        ref = manual_logprobs(tiny, p, y)
        torch.testing.assert_close(out.token_logprobs[i], ref, atol=1e-5, rtol=1e-5)
        assert out.num_tokens[i] == len(ref)
        assert out.sum_logprobs[i] == pytest.approx(float(ref.sum()), abs=1e-4)
        assert out.mean_logprobs[i] == pytest.approx(float(ref.mean()), abs=1e-5)
        assert out.token_ids[i] == tiny.tokenizer(y, add_special_tokens=False)["input_ids"]


def test_score_raw_text_and_system_as_generation_formats(tiny):
    raw = score(tiny, PROMPTS, TARGETS, chat=False)
    sys_ = score(tiny, PROMPTS, TARGETS, system="Be brief.")
    for i, (p, y) in enumerate(zip(PROMPTS, TARGETS, strict=True)):
        torch.testing.assert_close(raw.token_logprobs[i], manual_logprobs(tiny, p, y, chat=False), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            sys_.token_logprobs[i], manual_logprobs(tiny, p, y, system="Be brief."), atol=1e-5, rtol=0
        )
    assert not torch.allclose(raw.sum_logprobs, sys_.sum_logprobs)


@pytest.mark.slow
def test_score_equals_plain_hf_forward_embedded(embedded):
    out = score(embedded, PROMPTS, TARGETS, append_eos=True)
    eos = embedded.tokenizer.eos_token_id
    for i, (p, y) in enumerate(zip(PROMPTS, TARGETS, strict=True)):
        ids = embedded.tokenizer(y, add_special_tokens=False)["input_ids"] + [eos]
        torch.testing.assert_close(out.token_logprobs[i], manual_logprobs(embedded, p, ids), atol=1e-4, rtol=1e-4)


def test_batching_does_not_change_a_row(tiny):
    both = score(tiny, PROMPTS * 2, TARGETS + TARGETS[::-1], batch_size=6)
    for i in range(6):
        alone = score(tiny, [both_p := (PROMPTS * 2)[i]], [(TARGETS + TARGETS[::-1])[i]], batch_size=1)
        assert both_p
        torch.testing.assert_close(both.token_logprobs[i], alone.token_logprobs[0], atol=1e-5, rtol=1e-5)


def test_kv_prefix_matches_manual_forward_with_prefix(tiny):
    m = 3
    kv = _kv(tiny, 1, m)

    class Prefix(Control):
        def soft_prompt(self, rows):
            return SoftPrompt.from_kv([(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1))
                                       for k, v in kv])

    with_prefix = score(tiny, PROMPTS, TARGETS, [Prefix()])
    plain = score(tiny, PROMPTS, TARGETS)
    for i, (p, y) in enumerate(zip(PROMPTS, TARGETS, strict=True)):
        torch.testing.assert_close(with_prefix.token_logprobs[i], manual_logprobs(tiny, p, y, kv=kv), atol=1e-5, rtol=0)
    assert (with_prefix.sum_logprobs - plain.sum_logprobs).abs().max() > 1e-2  # the prefix matters


class Recorder(Control):
    """Records the log-probs the decoding loop assigns at each step (after every other control)."""

    def __init__(self):
        self.steps = []

    def process_logits(self, logits, ctx):
        self.steps.append(logits.float().log_softmax(-1))
        return logits


class AddAtSite(Control):
    def __init__(self, site: str, scale: float, seed: int, d: int):
        self.hidden_site = site
        self.vec = torch.randn(d, generator=torch.Generator().manual_seed(seed)) * scale

    def edit_hidden(self, h, ctx):
        return h + self.vec * (1 + ctx.step % 2)  # depends on the step, so a wrong step index shows


class LookaheadBonus(Control):
    """A controlled-decoding-like processor: re-rank the top 4 by a function of the lookahead state."""

    def process_logits(self, logits, ctx):
        top = logits.topk(4, dim=-1)
        s_next = ctx.lookahead_hidden(top.indices)  # (B, 4, d)
        bonus = s_next[..., 0] * 3.0  # (B, 4)
        return torch.full_like(logits, -1e4).scatter(1, top.indices, top.values + bonus)


class Soft(Control):
    def __init__(self, fn):
        self.fn = fn

    def soft_prompt(self, rows):
        return self.fn(rows)


class System(Control):
    def system_prompt(self):
        return "You are a pirate."


def _controls(lm):
    d = lm.info.hidden_size
    emb = torch.randn(3, 2, d, generator=torch.Generator().manual_seed(5))
    return [
        System(),
        Soft(lambda rows: SoftPrompt.from_kv(_kv(lm, len(rows), 2, seed=1))),
        Soft(lambda rows: SoftPrompt(mask=torch.tensor([[True, True], [False, True], [False, False]])[: len(rows)],
                                     embeds=emb[: len(rows)])),
        AddAtSite("layer:0", 0.5, 2, d),
        AddAtSite("final", 0.5, 3, d),
        LookaheadBonus(),
    ]


@pytest.mark.parametrize("which", ["none", "all"])
def test_teacher_forcing_equals_decoding(tiny, which):
    """Scoring the loop's own greedy output gives exactly the log-probs the loop assigned while generating it,
    under system + KV + embeds soft prompts, hidden edits at a layer and after the final norm, and a lookahead
    logits processor."""
    controls = _controls(tiny) if which == "all" else []
    rec = Recorder()
    out = generate(tiny, PROMPTS, GenerationConfig(max_new_tokens=8), [*controls, rec])
    steps = torch.stack(rec.steps, 1)  # (B, S, V)
    scored = score(tiny, PROMPTS, out.token_ids, controls)
    for i, ids in enumerate(out.token_ids):
        assert ids, "the tiny model produced an empty reply; pick other prompts"
        want = steps[i, : len(ids)].gather(1, torch.tensor(ids)[:, None]).squeeze(1)
        torch.testing.assert_close(scored.token_logprobs[i], want, atol=2e-5, rtol=1e-5)
        assert all(int(steps[i, s].argmax()) == t for s, t in enumerate(ids))  # greedy: each token the argmax


def test_controls_change_the_score(tiny):
    plain = score(tiny, PROMPTS[:1], TARGETS[:1])
    for c in _controls(tiny):
        other = score(tiny, PROMPTS[:1], TARGETS[:1], [c])
        assert (other.sum_logprobs - plain.sum_logprobs).abs().max() > 1e-3, type(c).__name__


def test_target_loss_is_differentiable_in_the_soft_prompt(tiny):
    batch = encode(tiny, PROMPTS, TARGETS)
    kv = torch.zeros(tiny.info.num_layers, 2, tiny.info.num_kv_heads, 4, tiny.info.head_dim, requires_grad=True)
    loss = target_loss(tiny, batch, [SoftPrompt.from_kv(kv, batch=3)])
    loss.backward()
    assert kv.grad is not None and kv.grad.abs().sum() > 0
    flat = target_token_logprobs(tiny, batch, [SoftPrompt.from_kv(kv.detach(), batch=3)])
    assert float(loss.detach()) == pytest.approx(-float(flat.mean()), abs=1e-5)


def test_collate_layout():
    b = collate([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]], pad_id=0)
    assert b.input_ids.tolist() == [[5, 6, 7, 1, 2, 0], [0, 0, 8, 3, 4, 9]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert b.prompt_len == 3 and b.num_tokens.tolist() == [2, 3]


def test_prompts_tokenised_as_generation_does(tiny):
    batch = encode(tiny, PROMPTS, TARGETS)
    ids, mask = tokenize_prompts(tiny, [tiny.format_prompt(p) for p in PROMPTS], chat=True)
    assert torch.equal(batch.input_ids[:, : batch.prompt_len], ids)
    assert torch.equal(batch.attention_mask[:, : batch.prompt_len], mask)


def test_empty_target_and_bad_input(tiny):
    out = score(tiny, PROMPTS[:2], ["", "Hello"])
    assert out.num_tokens.tolist()[0] == 0 and torch.isnan(out.mean_logprobs[0]) and out.sum_logprobs[0] == 0
    with pytest.raises(LMControlError):
        score(tiny, PROMPTS, TARGETS[:2])
    with pytest.raises(LMControlError):
        score(tiny, [" "], ["x"])

    class BestOf(Control):
        num_candidates = 4

    with pytest.raises(LMControlError, match="candidates"):
        score(tiny, PROMPTS, TARGETS, [BestOf()])


def test_follows_the_model_dtype(tiny):
    half = copy.deepcopy(tiny)
    half.model.to(torch.bfloat16)
    kv = _kv(tiny, 3, 2)
    ctrl = [Soft(lambda rows: SoftPrompt.from_kv(kv))]
    lo, hi = score(half, PROMPTS, TARGETS, ctrl), score(tiny, PROMPTS, TARGETS, ctrl)
    assert lo.sum_logprobs.dtype == torch.float32
    torch.testing.assert_close(lo.mean_logprobs, hi.mean_logprobs, atol=0.1, rtol=0.05)
