"""The engine: continuous batching, rows with different controls and settings, streaming, cancel, limits."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from lmcontrol import LMControlError
from lmcontrol.controls import Control, SoftPrompt
from lmcontrol.engine import Engine, QueueFull, Request, SamplingParams
from lmcontrol.engine.runner import HFRunner, LlamaRunner
from lmcontrol.generation import GenerationConfig, generate

PROMPTS = ["Write one sentence about the sea.", "Hi", "Tell me a long story about a cat and a dog, please.", "Why?"]
GREEDY = SamplingParams(max_new_tokens=10)


class AddVector(Control):
    def __init__(self, vec: torch.Tensor, site: str = "final"):
        self.vec, self.hidden_site = vec, site

    def edit_hidden(self, h, ctx):
        return h + self.vec.to(h.dtype)


class EmbedsPrefix(Control):
    def __init__(self, vectors: torch.Tensor):
        self.vectors = vectors  # (m, d)

    def soft_prompt(self, rows):
        b, (m, _) = len(rows), self.vectors.shape
        return SoftPrompt(mask=torch.ones(b, m, dtype=torch.bool), embeds=self.vectors.expand(b, -1, -1))


class BanToken(Control):
    def __init__(self, token: int):
        self.token = token

    def process_logits(self, logits, ctx):
        logits[:, self.token] = float("-inf")
        return logits


def alone(lm, request: Request) -> list[int]:
    engine = Engine(lm, max_batch_size=4)
    handle = engine.submit(request)
    engine.run_until_idle()
    return handle.result().token_ids


def test_rows_joining_and_leaving_match_running_alone(tiny):
    """Continuous batching: 6 requests of different lengths through 2 rows; each output equals it alone."""
    params = [SamplingParams(max_new_tokens=n) for n in (3, 9, 5, 12, 2, 7)]
    reqs = [Request(prompt=PROMPTS[i % 4], params=p) for i, p in enumerate(params)]
    want = [alone(tiny, Request(prompt=r.prompt, params=r.params)) for r in reqs]
    engine = Engine(tiny, max_batch_size=2)
    handles = [engine.submit(reqs[0])]
    engine.step()
    engine.step()  # request 0 is mid-way when the others arrive
    handles += [engine.submit(r) for r in reqs[1:]]
    sizes = []
    while engine.waiting or engine.running:
        engine.step()
        sizes.append(len(engine.running))
    assert [h.result().token_ids for h in handles] == want
    assert max(sizes) == 2 and engine.stats()["requests_finished"] == 6


def test_rows_with_different_controls_share_a_batch(tiny):
    d = tiny.info.hidden_size
    g = torch.Generator().manual_seed(0)
    controls = [
        (),
        (AddVector(torch.randn(d, generator=g) * 20),),
        (AddVector(torch.randn(d, generator=g) * 20, "layer:0"),),
        (EmbedsPrefix(torch.randn(3, d, generator=g)),),
        (BanToken(0),),
    ]
    reqs = [Request(prompt=PROMPTS[i % 4], params=GREEDY, controls=c) for i, c in enumerate(controls)]
    want = [alone(tiny, Request(prompt=r.prompt, params=r.params, controls=r.controls)) for r in reqs]
    assert len({tuple(w) for w in want}) > 2  # the controls do change the outputs
    engine = Engine(tiny, max_batch_size=8)
    handles = [engine.submit(r) for r in reqs]
    engine.run_until_idle()
    got = [h.result().token_ids for h in handles]
    for g_ids, w_ids in zip(got, want, strict=True):
        assert g_ids == w_ids


def test_sampled_row_does_not_depend_on_batch_mates(tiny):
    p = SamplingParams(max_new_tokens=12, temperature=0.9, top_p=0.95, seed=3)
    solo = alone(tiny, Request(prompt=PROMPTS[0], params=p))
    engine = Engine(tiny, max_batch_size=4)
    mates = [
        engine.submit(Request(prompt=q, params=SamplingParams(max_new_tokens=5, temperature=1.0, seed=9)))
        for q in PROMPTS[1:]
    ]
    h = engine.submit(Request(prompt=PROMPTS[0], params=p))
    engine.run_until_idle()
    assert h.result().token_ids == solo
    assert all(m.done() for m in mates)
    other_seed = alone(
        tiny, Request(prompt=PROMPTS[0], params=SamplingParams(max_new_tokens=12, temperature=0.9, seed=4))
    )
    assert other_seed != solo


@pytest.mark.parametrize("runner", [LlamaRunner, HFRunner])
def test_runners_agree_with_generate(tiny, runner):
    """Both model runners give the generate() (model.generate-equal) tokens, including a layer edit."""
    d = tiny.info.hidden_size
    edit = AddVector(torch.randn(d, generator=torch.Generator().manual_seed(1)) * 10, "layer:1")
    want = generate(tiny, PROMPTS, GenerationConfig(max_new_tokens=8), [edit]).token_ids
    engine = Engine(tiny, max_batch_size=4)
    engine.runner = runner(tiny.model)
    handles = [
        engine.submit(Request(prompt=p, params=SamplingParams(max_new_tokens=8), controls=[edit])) for p in PROMPTS
    ]
    engine.run_until_idle()
    assert [h.result().token_ids for h in handles] == want


def test_stream_events_concatenate_to_the_text(tiny):
    seen = []
    engine = Engine(tiny)
    h = engine.submit(Request(prompt=PROMPTS[2], params=SamplingParams(max_new_tokens=15), on_token=seen.append))
    engine.run_until_idle()
    events = list(h.events(timeout=1))
    out = h.result()
    assert events[-1].finished and events[-1].finish_reason == out.finish_reason
    assert "".join(e.text for e in events) == out.text
    assert [e.text for e in seen] == [e.text for e in events]
    assert sum(e.token_id is not None for e in events) >= 1


def test_stop_string_streaming_never_shows_the_stop(tiny):
    sampled = SamplingParams(max_new_tokens=30, temperature=1.0, seed=0)  # the tiny model's greedy text is "\n"s
    full = alone(tiny, Request(prompt=PROMPTS[0], params=sampled))
    text = tiny.tokenizer.decode(full, skip_special_tokens=True)
    stop = next(text[i : i + 2] for i in range(len(text) // 3, len(text)) if text[i : i + 2].strip())
    engine = Engine(tiny)
    params = SamplingParams(max_new_tokens=30, temperature=1.0, seed=0, stop=(stop,))
    h = engine.submit(Request(prompt=PROMPTS[0], params=params, stream=True))
    engine.run_until_idle()
    streamed = "".join(e.text for e in h.events(timeout=1))
    out = h.result()
    assert stop not in streamed and streamed == out.text == text[: text.index(stop)]
    assert out.finish_reason == "stop"


def test_cancel_and_timeout_free_their_rows(tiny):
    engine = Engine(tiny, max_batch_size=2)
    a = engine.submit(Request(prompt=PROMPTS[0], params=SamplingParams(max_new_tokens=50)))
    b = engine.submit(Request(prompt=PROMPTS[1], params=SamplingParams(max_new_tokens=50), timeout=1e-6))
    engine.step()
    a.cancel()
    engine.run_until_idle()
    assert a.result().finish_reason == "cancelled" and b.result().finish_reason == "timeout"
    assert not engine.running and not bool(engine.cache.valid.any())


def test_queue_full_and_bad_requests(tiny):
    engine = Engine(tiny, max_batch_size=1, max_queue=1)
    engine.submit(Request(prompt="hi"))
    with pytest.raises(QueueFull):
        engine.submit(Request(prompt="hi"))
    for bad in (
        Request(prompt="  "),
        Request(),
        Request(prompt="hi", messages=[{"role": "user", "content": "x"}]),
        Request(messages=[{"role": "robot", "content": "x"}]),
        Request(prompt="word " * 400),
    ):
        with pytest.raises(LMControlError):
            Engine(tiny).submit(bad)
    with pytest.raises(LMControlError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(LMControlError, match="stop"):
        SamplingParams(stop=("",))


def test_chat_messages_equal_the_single_prompt(tiny):
    single = alone(tiny, Request(prompt=PROMPTS[0], params=GREEDY, system="Be brief."))
    chat = alone(
        tiny,
        Request(
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPTS[0]}],
            params=GREEDY,
        ),
    )
    assert chat == single


def test_background_thread_and_asyncio_stream(tiny):
    engine = Engine(tiny, max_batch_size=4)
    engine.start()
    try:
        want = [alone(tiny, Request(prompt=p, params=GREEDY)) for p in PROMPTS]
        results: dict[int, list[int]] = {}

        def client(i: int) -> None:
            results[i] = engine.submit(Request(prompt=PROMPTS[i], params=GREEDY)).result(timeout=60).token_ids

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [results[i] for i in range(4)] == want

        async def stream() -> str:
            h = engine.submit(Request(prompt=PROMPTS[0], params=GREEDY, stream=True))
            return "".join([e.text async for e in h.aevents()])

        assert asyncio.run(stream()) == tiny.tokenizer.decode(want[0], skip_special_tokens=True)
    finally:
        engine.stop()


def test_follows_the_model_dtype(tiny):
    """Tensors follow the model: a bfloat16 copy of the model runs in bfloat16 without casts to float32."""
    import copy

    from lmcontrol.models import LanguageModel

    bf16 = LanguageModel(copy.deepcopy(tiny.model).to(torch.bfloat16), tiny.tokenizer, tiny.info)
    engine = Engine(bf16)
    assert engine.cache.keys.dtype == torch.bfloat16
    h = engine.submit(Request(prompt=PROMPTS[0], params=GREEDY))
    engine.run_until_idle()
    assert len(h.result().token_ids) > 0


@pytest.mark.slow
def test_bench_engine_suite_on_tiny(tiny, tmp_path):
    """`lmcontrol bench engine` end to end (tiny model): every contender runs, ratios and agreement are added, and
    the float32 engine's greedy text equals model.generate's at batch 1 and 8."""
    import dataclasses
    import json

    from lmcontrol.bench.runner import run_suite
    from lmcontrol.engine.bench import make_suite

    suite = make_suite()
    suite = dataclasses.replace(
        suite,
        methods=tuple(m for m in suite.methods if not m.name.startswith("llama.cpp")),
        generation=dataclasses.replace(suite.generation, max_new_tokens=4),
    )
    rows = [{"prompt": f"{p} ({i})"} for i in range(4) for p in PROMPTS]
    res = run_suite(suite, tmp_path, rows, lm=tiny)
    methods = res["methods"]
    assert methods["engine@1"]["= generate"] == 1.0 and methods["engine@8"]["= generate"] == 1.0
    assert methods["engine-continuous"]["= generate"] == 1.0
    assert methods["engine@8"]["units"] == 2 and methods["engine@8"]["speed-up SE"] >= 0  # 16 prompts = 2 units
    if "fbgemm" in torch.backends.quantized.supported_engines:
        assert "engine-fp16w@8" in methods and methods["engine-fp16w@8"]["= generate"] >= 0.5
    assert all(methods[m]["speed-up"] > 0 for m in methods)
    assert (tmp_path / "report.md").is_file() and json.loads((tmp_path / "results.json").read_text())[
        "suite"
    ] == "engine"
