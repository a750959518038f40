"""``lmcontrol bench engine``: the engine against ``model.generate`` (and llama.cpp when installed), side by side.

Every contender decodes the same prompts greedily in one process, interleaved by the bench runner, so machine
load hits all alike; compare the ratios, not the absolute tokens/s.

- ``hf-generate@B`` — transformers' ``model.generate`` on batches of B prompts (B = 1, 8): the reference.
- ``engine@B`` — the engine at the model's dtype (float32): token-identical to ``model.generate``.
- ``engine-bf16@B`` / ``hf-generate-bf16@8`` — a bfloat16 copy of the model (half the memory traffic; on CPUs
  with AVX512-BF16 the matmuls run natively); its greedy text is compared with float32's.
- ``engine-fp16w@B`` / ``hf-generate-fp16w@8`` — the float32 model with its linear layers' weights packed as
  float16 for fbgemm (``load_lm(weights="fp16-packed")``, CPU only): half the weight bytes, float32 activations.
- ``engine-continuous`` — 8 requests that arrive one per decode step and join the running batch (continuous
  batching), aggregate tokens/s.
- ``llama.cpp@1`` / ``llama.cpp@8`` — llama-cpp-python on the same embedded GGUF (Q4_1) if ``llama_cpp`` is
  importable (one request at a time; llama-cpp-python has no batched API, so @8 is 8 requests in sequence).

``finalize`` adds per method its tokens/s over the reference at the same batch (``speed-up``; with two or more
units of 8 prompts also the mean of the per-unit ratios and its standard error, paired unit by unit) and the
share of prompts whose greedy text equals float32 ``model.generate`` (``= generate``).

Clock: wall time by default. On a shared machine set ``LMCONTROL_BENCH_CLOCK=process`` to time with the
process's CPU time instead (the work each contender needs, immune to other jobs; use ``OMP_NUM_THREADS=1``);
``results.json`` records which clock was used.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmcontrol.generation import GenerationConfig, GenerationOutput
    from lmcontrol.models import LanguageModel

BATCH = 8
PROMPTS = "hh-rlhf:helpful-base"


def clock_name() -> str:
    return "process" if os.environ.get("LMCONTROL_BENCH_CLOCK", "wall") == "process" else "wall"


def clock() -> float:
    """Seconds on the bench's clock: wall (default) or this process's CPU time."""
    return time.process_time() if clock_name() == "process" else time.perf_counter()


_BF16: dict[int, LanguageModel] = {}


def _bf16(lm: LanguageModel) -> LanguageModel:
    """A bfloat16 copy of ``lm`` (made once per process)."""
    import torch

    from lmcontrol.models import LanguageModel

    if id(lm) not in _BF16:
        _BF16[id(lm)] = LanguageModel(copy.deepcopy(lm.model).to(torch.bfloat16), lm.tokenizer, lm.info)
    return _BF16[id(lm)]


_FP16W: dict[int, LanguageModel] = {}


def _fp16w(lm: LanguageModel) -> LanguageModel:
    """A copy of ``lm`` with fp16-packed linear weights (made once per process)."""
    from lmcontrol.fp16_weights import pack_fp16_weights
    from lmcontrol.models import LanguageModel

    if id(lm) not in _FP16W:
        model = copy.deepcopy(lm.model)
        pack_fp16_weights(model)
        _FP16W[id(lm)] = LanguageModel(model, lm.tokenizer, lm.info)
    return _FP16W[id(lm)]


def _output(prompts: list[str], texts: list[str], ids: list[list[int]], seconds: float, first: float):
    from lmcontrol.generation import GenerationOutput

    return GenerationOutput(prompts, texts, ids, seconds, first, sum(len(i) for i in ids))


def hf_generate(lm: LanguageModel, prompts: list[str], config: GenerationConfig, batch: int) -> GenerationOutput:
    """``model.generate`` (greedy) on batches of ``batch`` prompts, cut at EOS like the engine."""
    from lmcontrol.generation import tokenize_prompts

    eos = lm.tokenizer.eos_token_id
    t0 = clock()
    texts, ids_out = [], []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        ids, mask = tokenize_prompts(lm, [lm.format_prompt(p, chat=config.chat) for p in chunk], config.chat)
        device = next(lm.model.parameters()).device
        out = lm.model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=config.max_new_tokens,
            do_sample=False,
            pad_token_id=lm.tokenizer.pad_token_id,
        )
        for row in out[:, ids.shape[1] :].tolist():
            row = row[: row.index(eos)] if eos in row else row
            ids_out.append(row)
            texts.append(lm.tokenizer.decode(row, skip_special_tokens=True))
    return _output(prompts, texts, ids_out, clock() - t0, float("nan"))


def engine_batches(lm: LanguageModel, prompts: list[str], config: GenerationConfig, batch: int) -> GenerationOutput:
    """The engine on batches of ``batch`` prompts (each batch submitted at once)."""
    from lmcontrol.generation import generate

    t0 = clock()
    outs = [generate(lm, prompts[i : i + batch], config) for i in range(0, len(prompts), batch)]
    return _output(
        prompts,
        [t for o in outs for t in o.texts],
        [t for o in outs for t in o.token_ids],
        clock() - t0,
        outs[0].first_token_seconds,
    )


def engine_continuous(lm: LanguageModel, prompts: list[str], config: GenerationConfig) -> GenerationOutput:
    """Requests arriving one per decode step into a running engine (max batch 8): continuous batching."""
    from lmcontrol.engine import Engine, Request

    engine = Engine(lm, max_batch_size=BATCH)
    t0 = clock()
    handles = []
    for p in prompts:
        handles.append(engine.submit(Request(prompt=p, params=config.sampling_params(), chat=config.chat)))
        engine.step()
    engine.run_until_idle()
    outs = [h.result() for h in handles]
    return _output(
        prompts,
        [o.text for o in outs],
        [o.token_ids for o in outs],
        clock() - t0,
        min(o.first_token_seconds for o in outs),
    )


@functools.cache
def _llama_cpp() -> Any:
    import llama_cpp
    import torch

    from lmcontrol.models import embedded_gguf_path

    path = embedded_gguf_path()
    return llama_cpp.Llama(model_path=str(path), n_ctx=2048, n_threads=torch.get_num_threads(), verbose=False)


def llama_cpp_run(lm: LanguageModel, prompts: list[str], config: GenerationConfig) -> GenerationOutput:
    """llama-cpp-python on the embedded GGUF, greedy, one request at a time, same chat template."""
    llm = _llama_cpp()
    t0 = clock()
    texts, ids = [], []
    for p in prompts:
        text = lm.format_prompt(p, chat=config.chat)
        out = llm.create_completion(text, max_tokens=config.max_new_tokens, temperature=0.0, top_k=1)
        texts.append(out["choices"][0]["text"])
        ids.append(lm.tokenizer(texts[-1], add_special_tokens=False)["input_ids"])
    return _output(prompts, texts, ids, clock() - t0, float("nan"))


def unit_speeds(records: list[dict[str, Any]], size: int) -> dict[tuple[str, ...], float]:
    """Tokens/s of each unit (``size`` consecutive rows of one method: the prompts it ran as one call)."""
    speeds = {}
    for i in range(0, len(records) - size + 1, size):
        chunk = records[i : i + size]
        seconds = sum(r["seconds"] for r in chunk)
        if seconds > 0:
            speeds[tuple(r["prompt"] for r in chunk)] = sum(r["tokens"] for r in chunk) / seconds
    return speeds


def finalize(results: dict[str, Any], out: Path) -> dict[str, Any]:
    """Speed-up over the same-batch reference (and its standard error, paired over the units of 8 prompts every
    contender ran), and agreement of greedy text with float32 model.generate."""
    import statistics

    rows: dict[str, dict[str, str]] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    for line in (out / "generations.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            rows.setdefault(r["method"], {})[r["prompt"]] = r["continuation"]
            records.setdefault(r["method"], []).append(r)
    results["clock"] = clock_name()
    methods = results["methods"]
    reference = {"1": "hf-generate@1", "8": "hf-generate@8"}
    units = {name: unit_speeds(recs, BATCH) for name, recs in records.items()}
    for name, values in methods.items():
        batch = "1" if name.endswith("@1") else "8"
        ref = methods.get(reference[batch], {})
        if values.get("tokens/s") and ref.get("tokens/s"):
            values["speed-up"] = values["tokens/s"] / ref["tokens/s"]
        mine_u, ref_u = units.get(name, {}), units.get(reference[batch], {})
        ratios = [mine_u[k] / ref_u[k] for k in mine_u if k in ref_u]
        if len(ratios) >= 2:
            values["speed-up per unit"] = statistics.fmean(ratios)
            values["speed-up SE"] = statistics.stdev(ratios) / len(ratios) ** 0.5
            values["units"] = len(ratios)
        fp32 = rows.get(reference[batch]) or rows.get("hf-generate@8") or {}
        mine = rows.get(name, {})
        common = [p for p in mine if p in fp32]
        if common:
            values["= generate"] = sum(mine[p] == fp32[p] for p in common) / len(common)
    return results


def make_suite() -> Any:
    from lmcontrol.bench.suite import BenchMethod, BenchSuite, rows_from_dataset
    from lmcontrol.generation import GenerationConfig

    methods = [
        BenchMethod("hf-generate@1", run=lambda lm, p, c: hf_generate(lm, p, c, 1), help="model.generate, batch 1"),
        BenchMethod("engine@1", run=lambda lm, p, c: engine_batches(lm, p, c, 1), help="the engine, batch 1"),
        BenchMethod("hf-generate@8", run=lambda lm, p, c: hf_generate(lm, p, c, 8), help="model.generate, batch 8"),
        BenchMethod("engine@8", run=lambda lm, p, c: engine_batches(lm, p, c, 8), help="the engine, batch 8"),
        BenchMethod(
            "engine-bf16@1", run=lambda lm, p, c: engine_batches(_bf16(lm), p, c, 1), help="bfloat16 model, batch 1"
        ),
        BenchMethod(
            "engine-bf16@8", run=lambda lm, p, c: engine_batches(_bf16(lm), p, c, 8), help="bfloat16 model, batch 8"
        ),
        BenchMethod(
            "hf-generate-bf16@8",
            run=lambda lm, p, c: hf_generate(_bf16(lm), p, c, 8),
            help="model.generate on the bfloat16 model, batch 8",
        ),
        BenchMethod(
            "engine-continuous", run=engine_continuous, help="8 requests joining a running batch, one per step"
        ),
        BenchMethod(
            "engine-bf16-continuous",
            run=lambda lm, p, c: engine_continuous(_bf16(lm), p, c),
            help="the same on the bfloat16 model",
        ),
    ]
    import torch

    if "fbgemm" in torch.backends.quantized.supported_engines:  # the fp16-packed format needs x86-64 fbgemm
        methods += [
            BenchMethod(
                "engine-fp16w@1",
                run=lambda lm, p, c: engine_batches(_fp16w(lm), p, c, 1),
                help="fp16-packed weights (fbgemm), batch 1",
            ),
            BenchMethod(
                "engine-fp16w@8",
                run=lambda lm, p, c: engine_batches(_fp16w(lm), p, c, 8),
                help="fp16-packed weights (fbgemm), batch 8",
            ),
            BenchMethod(
                "hf-generate-fp16w@8",
                run=lambda lm, p, c: hf_generate(_fp16w(lm), p, c, 8),
                help="model.generate on the fp16-packed model, batch 8",
            ),
        ]
    if importlib.util.find_spec("llama_cpp") is not None:
        methods += [
            BenchMethod("llama.cpp@1", run=llama_cpp_run, help="llama-cpp-python, embedded GGUF, one at a time"),
        ]
    return BenchSuite(
        name="engine",
        prompts=rows_from_dataset(PROMPTS, field="first_human"),
        methods=tuple(methods),
        metrics=(),
        generation=GenerationConfig(max_new_tokens=64, temperature=0.0),
        batch_size=BATCH,
        help="engine vs model.generate (and llama.cpp): tokens/s ratios at batch 1 and 8, continuous batching",
        finalize=finalize,
    )
