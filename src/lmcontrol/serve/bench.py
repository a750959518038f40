"""``lmcontrol bench serve``: the server under load, measured through the bench harness.

The harness runs the methods interleaved batch by batch (``batch_size`` = 16 prompts) in one process; each
method sends its batch through a real uvicorn server on a loopback port (started on first use, over an engine
on the harness's model) with streaming chat requests, or straight to the engine (``offline``):

=================  ======================================================================================
``1-client``       the batch's requests one after another (the baseline of the timing ratios)
``16-clients``     the 16 requests at once, from 16 concurrent clients
``offline``        the engine's Python API, one request at a time, no HTTP (time-to-first-token reference)
``8x1-control``    two waves of 8 concurrent requests, all with one control (the pirate compressed prompt)
``8x8-controls``   two waves of 8 concurrent requests with 8 different controls: three compressed prompts,
                   RE-Control, a static steering direction at scales 1, 2 and 4, a system prompt
=================  ======================================================================================

``finalize`` then adds, per method, the mean tokens/s over batches with its standard error and the streaming
time to first token (p50, p95); re-sends every ``8x8-controls`` row alone (greedy) and counts identical
outputs; runs the soak (50 clients for 60 s; ``LMCONTROL_SERVE_SOAK_SECONDS`` shortens it) reporting errors,
latency p50/p95 and peak RSS; checks the goals (ratios with standard errors over batches); writes
``serve.md`` and ``serve.png`` beside the harness's ``results.json`` / ``report.md``.

Measurements live in the running process: a resumed run (``--out`` with finished units) reports the goals only
for the units it ran.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import os
import statistics
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmcontrol.settings import ARTIFACTS_DIR

if TYPE_CHECKING:
    from lmcontrol.generation import GenerationConfig, GenerationOutput
    from lmcontrol.models import LanguageModel

CLIENTS = 16
WAVE = 8
SOAK_CLIENTS = 50
SOAK_MAX_TOKENS = 16
MAX_NEW_TOKENS = 48
MIXED_SPECS = (
    "compressed:{A}/compressed-pirate",
    "compressed:{A}/compressed-sunny",
    "compressed:{A}/compressed-answer_format",
    "recontrol:{A}/recontrol-hh",
    "static-re:{A}/recontrol-hh,scale=1",
    "static-re:{A}/recontrol-hh,scale=2",
    "static-re:{A}/recontrol-hh,scale=4",
    "system",
)
GOALS = {"throughput_16_vs_1": 4.0, "mixed_vs_one": 0.9, "ttft_stream_vs_offline": 1.5}


def soak_seconds_default() -> float:
    return float(os.environ.get("LMCONTROL_SERVE_SOAK_SECONDS", "60"))


class ServeBench:
    """The server the methods talk to, and what they measured (per call and per request)."""

    def __init__(self, specs: tuple[str, ...] = MIXED_SPECS, soak_clients: int = SOAK_CLIENTS,
                 soak_seconds: float | None = None) -> None:
        self.specs, self.soak_clients = specs, soak_clients
        self.soak_duration = soak_seconds if soak_seconds is not None else soak_seconds_default()
        self.lm: LanguageModel | None = None
        self.engine: Any = None
        self.server: Any = None
        self.port = 0
        self.calls: dict[str, list[tuple[int, float]]] = collections.defaultdict(list)  # (tokens, seconds)
        self.ttft: dict[str, list[float]] = collections.defaultdict(list)
        self.mixed_rows: dict[str, int] = {}  # prompt -> control index of its 8x8-controls row
        self.rss_peak = 0
        self._lock = threading.Lock()

    # ---- server
    def ensure(self, lm: LanguageModel) -> None:
        if self.server is not None:
            return
        from lmcontrol.engine import Engine
        from lmcontrol.serve.app import create_app
        from lmcontrol.serve.config import ServeSettings
        from lmcontrol.serve.controls import ControlStore
        from lmcontrol.serve.server import uvicorn_in_thread

        self.lm, self.engine = lm, Engine(lm, max_batch_size=CLIENTS, max_queue=256)
        store = ControlStore(lm, cache_size=len(self.specs))
        for i, spec in enumerate(self.specs):
            store.load(f"c{i}", spec.format(A=ARTIFACTS_DIR), trusted=True)
        app = create_app(self.engine, store, ServeSettings(max_tokens=256, request_timeout=300))
        self.server, _, self.port = uvicorn_in_thread(app)
        threading.Thread(target=self._watch_rss, daemon=True).start()

    def _watch_rss(self) -> None:
        import psutil

        proc = psutil.Process()
        while True:
            self.rss_peak = max(self.rss_peak, proc.memory_info().rss)
            time.sleep(0.25)

    # ---- clients
    async def _chat(self, client: Any, prompt: str, config: GenerationConfig, model: str = "smollm2",
                    max_tokens: int | None = None) -> dict[str, Any]:
        """One streaming chat request: text, completion tokens, time to first token, latency."""
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True,
                "max_tokens": max_tokens or config.max_new_tokens, "temperature": config.temperature,
                "top_p": config.top_p, "seed": config.seed, "stream_options": {"include_usage": True}}
        start, first, text, tokens = time.perf_counter(), None, "", 0
        async with client.stream("POST", f"http://127.0.0.1:{self.port}/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(chunk["error"]["message"])
                for choice in chunk.get("choices", []):
                    delta = choice["delta"].get("content")
                    if delta:
                        first = first or time.perf_counter()
                        text += delta
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
        end = time.perf_counter()
        return {"text": text, "tokens": tokens, "ttft": (first or end) - start, "latency": end - start}

    async def _many(self, jobs: list[tuple[str, str]], config: GenerationConfig, concurrency: int) -> list[dict]:
        import httpx

        sem = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
        async with httpx.AsyncClient(timeout=600, limits=limits) as client:

            async def one(prompt: str, model: str) -> dict:
                async with sem:
                    return await self._chat(client, prompt, config, model)

            return await asyncio.gather(*(one(p, m) for p, m in jobs))

    def http(self, method: str, lm: LanguageModel, prompts: list[str], config: GenerationConfig,
             concurrency: int, models: list[str] | None = None) -> GenerationOutput:
        """Send ``prompts`` (model per prompt) ``concurrency`` at a time; record tokens/s and TTFT."""

        self.ensure(lm)
        models = models or ["smollm2"] * len(prompts)
        start = time.perf_counter()
        out = asyncio.run(self._many(list(zip(prompts, models, strict=True)), config, concurrency))
        seconds = time.perf_counter() - start
        return self._record(method, prompts, out, seconds, config)

    def offline(self, lm: LanguageModel, prompts: list[str], config: GenerationConfig) -> GenerationOutput:
        """The engine's Python API, one request at a time (what the HTTP layer adds is the difference)."""
        from lmcontrol.engine import Request, SamplingParams

        self.ensure(lm)
        params = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                top_p=config.top_p, seed=config.seed)
        rows, start = [], time.perf_counter()
        for p in prompts:
            res = self.engine.submit(Request(prompt=p, params=params, chat=config.chat)).result(timeout=600)
            rows.append({"text": res.text, "tokens": res.completion_tokens, "ttft": res.first_token_seconds})
        return self._record("offline", prompts, rows, time.perf_counter() - start, config)

    def _record(self, method: str, prompts: list[str], rows: list[dict], seconds: float,
                config: GenerationConfig) -> GenerationOutput:
        from lmcontrol.generation import GenerationOutput

        tokens = sum(r["tokens"] for r in rows)
        if config.max_new_tokens > 2:  # not the harness's 2-token warm-up call
            with self._lock:
                self.calls[method].append((tokens, seconds))
                self.ttft[method] += [r["ttft"] for r in rows]
        ids = [list(range(r["tokens"])) for r in rows]  # token counts only (the harness counts them)
        return GenerationOutput(prompts=list(prompts), texts=[r["text"] for r in rows], token_ids=ids,
                                seconds=seconds, first_token_seconds=min((r["ttft"] for r in rows), default=0.0),
                                new_tokens=tokens)

    def method(self, name: str) -> Any:
        """``run(lm, prompts, config)`` for the harness."""

        def run(lm: LanguageModel, prompts: list[str], config: GenerationConfig) -> GenerationOutput:
            if name == "1-client":
                return self.http(name, lm, prompts, config, 1)
            if name == "16-clients":
                return self.http(name, lm, prompts, config, CLIENTS)
            if name == "offline":
                return self.offline(lm, prompts, config)
            if name == "8x1-control":
                return self.http(name, lm, prompts, config, WAVE, ["smollm2:c0"] * len(prompts))
            index = [i % len(self.specs) for i in range(len(prompts))]
            for p, i in zip(prompts, index, strict=True):
                self.mixed_rows[p] = i
            return self.http(name, lm, prompts, config, WAVE, [f"smollm2:c{i}" for i in index])

        return run

    # ---- after the harness
    def finalize(self, results: dict[str, Any], out: Path) -> dict[str, Any]:
        from lmcontrol.bench.runner import GENERATIONS, read_generations

        methods = results["methods"]
        for name, calls in self.calls.items():
            if name in methods:
                rates = [t / s for t, s in calls if s > 0]
                methods[name]["tok_s_mean"] = statistics.fmean(rates) if rates else None
                methods[name]["tok_s_se"] = _se(rates)
                methods[name]["ttft_p50"] = _quantile(self.ttft[name], 0.5)
                methods[name]["ttft_p95"] = _quantile(self.ttft[name], 0.95)
        goals: dict[str, Any] = {
            "throughput_16_vs_1": _paired_ratio(self.calls["16-clients"], self.calls["1-client"]),
            "mixed_vs_one": _paired_ratio(self.calls["8x8-controls"], self.calls["8x1-control"]),
        }
        ttft_s, ttft_o = _quantile(self.ttft["1-client"], 0.5), _quantile(self.ttft["offline"], 0.5)
        goals["ttft_stream_vs_offline"] = {
            "value": ttft_s / ttft_o if ttft_s and ttft_o else None, "se": _ratio_se_bootstrap(
                self.ttft["1-client"], self.ttft["offline"]), "stream_p50": ttft_s, "offline_p50": ttft_o}
        for key, goal in GOALS.items():
            v = goals[key]["value"]
            better = (v is not None and v <= goal) if key.startswith("ttft") else (v is not None and v >= goal)
            goals[key].update(goal=goal, met=better)
        rows = [r for r in read_generations(out / GENERATIONS) if r["method"] == "8x8-controls"]
        goals["identical_alone"] = self.identical_alone(rows, results)
        goals["soak"] = self.soak(results)
        goals["soak"]["met"] = goals["soak"]["errors"] == 0
        results["serve"] = goals
        write_serve_report(results, out, self)
        return results

    def identical_alone(self, rows: list[dict], results: dict[str, Any]) -> dict[str, Any]:
        """Re-send every mixed row alone (same control, greedy) and count identical texts."""
        from lmcontrol.generation import GenerationConfig

        gen = results.get("generation", {})
        config = GenerationConfig(max_new_tokens=int(gen.get("max_new_tokens", MAX_NEW_TOKENS)), temperature=0.0)
        known = [r for r in rows if r["prompt"] in self.mixed_rows]
        jobs = [(r["prompt"], f"smollm2:c{self.mixed_rows[r['prompt']]}") for r in known]
        alone = asyncio.run(self._many(jobs, config, 1)) if jobs else []
        same = [a["text"] == r["continuation"] for a, r in zip(alone, known, strict=True)]
        return {"rows": len(same), "identical": sum(same), "value": sum(same) / len(same) if same else None,
                "goal": 1.0, "met": bool(same) and all(same)}

    def soak(self, results: dict[str, Any]) -> dict[str, Any]:
        """``soak_clients`` clients send non-stop for ``soak_duration`` seconds: errors, latency, peak RSS."""
        import psutil

        from lmcontrol.generation import GenerationConfig

        prompts = [p for p in self.mixed_rows] or ["Tell me about the ocean."]
        config = GenerationConfig(max_new_tokens=SOAK_MAX_TOKENS, temperature=0.7, top_p=0.9, seed=0)
        rss_before = psutil.Process().memory_info().rss
        latencies, errors, tokens = [], collections.Counter(), 0
        duration = self.soak_duration

        async def main() -> None:
            import httpx

            nonlocal tokens
            stop_at = time.perf_counter() + duration
            limits = httpx.Limits(max_connections=self.soak_clients + 4)
            async with httpx.AsyncClient(timeout=300, limits=limits) as client:

                async def worker(k: int) -> None:
                    nonlocal tokens
                    i = k
                    while time.perf_counter() < stop_at:
                        try:
                            r = await self._chat(client, prompts[i % len(prompts)], config, max_tokens=SOAK_MAX_TOKENS)
                            latencies.append(r["latency"])
                            tokens += r["tokens"]
                        except Exception as e:  # noqa: BLE001 - every failure is counted, none is fatal
                            errors[type(e).__name__ + ": " + str(e)[:80]] += 1
                        i += self.soak_clients

                await asyncio.gather(*(worker(k) for k in range(self.soak_clients)))

        start = time.perf_counter()
        asyncio.run(main())
        wall = time.perf_counter() - start
        self.soak_latencies = latencies
        return {"requests": len(latencies) + sum(errors.values()), "errors": sum(errors.values()),
                "error_kinds": dict(errors), "latency_p50": _quantile(latencies, 0.5),
                "latency_p95": _quantile(latencies, 0.95), "tokens_per_second": tokens / wall,
                "seconds": wall, "rss_before_mb": rss_before / 2**20,
                "rss_after_mb": psutil.Process().memory_info().rss / 2**20, "peak_rss_mb": self.rss_peak / 2**20}


# ---------------------------------------------------------------------------------------------------------
# statistics


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _se(values: list[float]) -> float | None:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None


def _paired_ratio(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> dict[str, Any]:
    """Mean over batches of tokens/s(a) / tokens/s(b), batch k of one against batch k of the other."""
    ratios = [(ta / sa) / (tb / sb) for (ta, sa), (tb, sb) in zip(a, b, strict=False) if sa > 0 and sb > 0 and tb > 0]
    return {"value": statistics.fmean(ratios) if ratios else None, "se": _se(ratios), "batches": len(ratios)}


def _ratio_se_bootstrap(a: list[float], b: list[float], n: int = 1000) -> float | None:
    """Bootstrap standard error of median(a) / median(b)."""
    if len(a) < 2 or len(b) < 2:
        return None
    import numpy as np

    rng = np.random.default_rng(0)
    xa, xb = np.asarray(a), np.asarray(b)
    stats = [np.median(rng.choice(xa, len(xa))) / np.median(rng.choice(xb, len(xb))) for _ in range(n)]
    return float(np.std(stats))


# ---------------------------------------------------------------------------------------------------------
# report


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def write_serve_report(results: dict[str, Any], out: Path, bench: ServeBench) -> None:
    """``serve.md`` (the goals table, per-method throughput and TTFT, the soak) and ``serve.png``."""
    from lmcontrol.artifacts import atomic_write_text

    goals, methods = results["serve"], results["methods"]
    soak = goals["soak"]
    lines = ["# bench `serve`", "", "| goal | measured | ± SE | target | met |", "|---|---|---|---|---|"]
    names = {"throughput_16_vs_1": "16 clients / 1 client, aggregate tokens/s",
             "mixed_vs_one": "8 different controls / 8 x one control, tokens/s",
             "ttft_stream_vs_offline": "streaming TTFT p50 / offline engine TTFT p50"}
    for key, label in names.items():
        g = goals[key]
        sign = "≤" if key.startswith("ttft") else "≥"
        lines.append(f"| {label} | {_fmt(g['value'])} | {_fmt(g['se'])} | {sign} {g['goal']} | {g['met']} |")
    ia = goals["identical_alone"]
    lines.append(f"| mixed rows identical to the row alone (greedy) | {ia['identical']}/{ia['rows']} | | all | "
                 f"{ia['met']} |")
    lines.append(f"| {bench.soak_clients} clients x {bench.soak_duration:.0f} s: errors | {soak['errors']} | | 0 | "
                 f"{soak['errors'] == 0} |")
    lines += ["", "| method | tokens/s (mean over batches) | ± SE | TTFT p50 (s) | TTFT p95 (s) |",
              "|---|---|---|---|---|"]
    for name, v in methods.items():
        if "tok_s_mean" in v:
            lines.append(f"| {name} | {_fmt(v['tok_s_mean'], 1)} | {_fmt(v['tok_s_se'], 1)} | "
                         f"{_fmt(v['ttft_p50'], 3)} | {_fmt(v['ttft_p95'], 3)} |")
    lines += ["", f"Soak: {soak['requests']} requests of {SOAK_MAX_TOKENS} tokens from {bench.soak_clients} clients "
              f"({soak['seconds']:.0f} s until the last in-flight request finished), "
              f"latency p50 {_fmt(soak['latency_p50'])} s, p95 {_fmt(soak['latency_p95'])} s, "
              f"{_fmt(soak['tokens_per_second'], 1)} tokens/s; RSS {soak['rss_before_mb']:.0f} MB before, "
              f"{soak['rss_after_mb']:.0f} MB after, peak {soak['peak_rss_mb']:.0f} MB (server and clients in one "
              "process).", "", "![serve](serve.png)", ""]
    atomic_write_text(out / "serve.md", "\n".join(lines))
    _plot(results, out, bench)


def _plot(results: dict[str, Any], out: Path, bench: ServeBench) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = results["methods"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    names = [m for m in ("1-client", "16-clients", "offline", "8x1-control", "8x8-controls") if m in methods]
    means = [methods[m].get("tok_s_mean") or 0 for m in names]
    errs = [methods[m].get("tok_s_se") or 0 for m in names]
    axes[0].bar(names, means, yerr=errs, color=[f"C{i}" for i in range(len(names))], capsize=3)
    axes[0].set_title("aggregate tokens/s (± SE over batches)", fontsize=9)
    axes[0].tick_params(axis="x", rotation=25, labelsize=8)
    data = [bench.ttft[m] for m in ("1-client", "offline") if bench.ttft[m]]
    if data:
        axes[1].boxplot(data, tick_labels=["HTTP streaming", "offline engine"][: len(data)])
    axes[1].set_title("time to first token (s), one request at a time", fontsize=9)
    lat = getattr(bench, "soak_latencies", [])
    if lat:
        axes[2].hist(lat, bins=30, color="C4")
    axes[2].set_title(f"soak: latency (s) of {bench.soak_clients} clients", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "serve.png", dpi=100)
    plt.close(fig)


def make_suite(bench: ServeBench | None = None) -> Any:
    """The suite; ``bench`` swaps the server's controls / soak (tests use the tiny model and system prompts)."""
    from lmcontrol.bench.suite import BenchMethod, BenchSuite, rows_from_dataset
    from lmcontrol.generation import GenerationConfig

    bench = bench or ServeBench()
    helps = {"1-client": "one request at a time over HTTP (streaming)", "16-clients": "16 concurrent clients",
             "offline": "the engine's Python API, one request at a time",
             "8x1-control": "waves of 8 concurrent requests with one control (pirate prefix)",
             "8x8-controls": "waves of 8 concurrent requests with 8 different controls"}
    return BenchSuite(
        name="serve",
        prompts=rows_from_dataset("hh-rlhf:helpful-base", field="first_human"),
        methods=tuple(BenchMethod(name, run=bench.method(name), help=h) for name, h in helps.items()),
        metrics=(),
        generation=GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, chat=True),
        batch_size=CLIENTS,
        help="the server under load: 16 clients, 8 controls in one batch, TTFT, a 50-client soak",
        finalize=bench.finalize,
    )
