"""fp16-packed linear weights (fbgemm) for CPU decoding: close to float32, exact through the engine, clear errors."""

from __future__ import annotations

import copy

import pytest
import torch

from lmcontrol import LMControlError
from lmcontrol.fp16_weights import PackedFp16Linear, pack_fp16_weights
from lmcontrol.generation import GenerationConfig, generate
from lmcontrol.models import LanguageModel, load_lm

pytestmark = pytest.mark.skipif(
    "fbgemm" not in torch.backends.quantized.supported_engines, reason="fbgemm kernels are x86-64 only"
)
PROMPTS = ["Write one sentence about the sea.", "Hi", "Tell me a long story about a cat and a dog, please.", "Why?"]


def packed_copy(lm: LanguageModel) -> LanguageModel:
    model = copy.deepcopy(lm.model)
    pack_fp16_weights(model)
    return LanguageModel(model, lm.tokenizer, lm.info)


def test_packed_linear_equals_fp16_rounded_weights():
    """The packed layer computes x (W rounded to float16)^T + b in float32 (eq. y = xW^T + b)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    x = torch.randn(5, 3, 64)
    w16 = lin.weight.detach().half().float()
    expected = x @ w16.T + lin.bias.detach()
    got = PackedFp16Linear(lin)(x)
    assert got.shape == (5, 3, 48) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_packing_swaps_every_linear_and_keeps_logits_close(tiny):
    lm = packed_copy(tiny)
    assert not any(type(m) is torch.nn.Linear for m in lm.model.modules())
    ids = tiny.tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    dense = tiny.model(input_ids=ids).logits
    packed = lm.model(input_ids=ids).logits
    assert (packed - dense).norm() / dense.norm() < 1e-2


def test_engine_on_packed_weights_equals_model_generate(tiny):
    """Same weights, same kernels: the engine's greedy tokens equal model.generate's on the packed model."""
    lm = packed_copy(tiny)
    config = GenerationConfig(max_new_tokens=8)
    out = generate(lm, PROMPTS, config)
    for prompt, tokens in zip(PROMPTS, out.token_ids, strict=True):
        enc = lm.tokenizer(lm.format_prompt(prompt), return_tensors="pt")
        ref = lm.model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
        ref_ids = ref[0, enc["input_ids"].shape[1] :].tolist()
        eos = lm.tokenizer.eos_token_id
        assert tokens == (ref_ids[: ref_ids.index(eos)] if eos in ref_ids else ref_ids)


def test_refuses_what_it_cannot_run(tiny):
    with pytest.raises(LMControlError, match="float32"):
        pack_fp16_weights(copy.deepcopy(tiny.model).to(torch.bfloat16))
    with pytest.raises(LMControlError, match="no nn.Linear"):
        pack_fp16_weights(torch.nn.Sequential(torch.nn.Embedding(4, 4)))
    with pytest.raises(LMControlError, match="weights must be"):
        load_lm(None, weights="int3")


def test_cli_rejects_unknown_weight_format(cli):
    code, _, err = cli("generate", "--prompt", "hi", "--weights", "int3")
    assert code == 2 and "--weights must be dense or fp16-packed" in err and "Traceback" not in err


@pytest.mark.slow
def test_embedded_packed_greedy_mostly_equals_float32(embedded):
    """On the embedded model the rounding rarely flips a greedy choice (bench engine measures the share)."""
    lm = packed_copy(embedded)
    config = GenerationConfig(max_new_tokens=16)
    packed, dense = generate(lm, PROMPTS, config).texts, generate(embedded, PROMPTS, config).texts
    same = sum(a == b for a, b in zip(packed, dense, strict=True))
    assert same >= 3


def test_server_config_checks_the_weight_format():
    from lmcontrol.serve.server import ServerConfig, build

    with pytest.raises(LMControlError, match="--weights must be"):
        ServerConfig(weights="int3")
    if not torch.cuda.is_available():
        with pytest.raises(LMControlError, match="no CUDA device"):
            build(ServerConfig(weights="fp16-packed", device="cuda"))
