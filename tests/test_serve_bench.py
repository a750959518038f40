"""``lmcontrol bench serve`` end to end on the tiny model: every method through a real server, the goals,
the identity check, a short soak, and the report files."""

from __future__ import annotations

import dataclasses
import json

import pytest

pytest.importorskip("uvicorn")

pytestmark = pytest.mark.slow  # five methods, the identity re-runs and a soak through a real server (~1 min)


def test_bench_serve_runs_every_method_and_writes_goals(tiny, tmp_path):
    from lmcontrol.bench.runner import run_suite
    from lmcontrol.serve.bench import ServeBench, make_suite

    bench = ServeBench(specs=("system:Be brief.", "system:Be kind."), soak_clients=3, soak_seconds=1.0)
    suite = make_suite(bench)
    suite = dataclasses.replace(suite, generation=dataclasses.replace(suite.generation, max_new_tokens=6),
                                batch_size=4)
    prompts = [{"prompt": p} for p in ("Hi there", "What is tea?", "Name a colour.", "Count to three.")]
    try:
        results = run_suite(suite, tmp_path, prompts, lm=tiny)
    finally:
        if bench.server is not None:
            bench.server.should_exit = True
    assert set(results["methods"]) == {"1-client", "16-clients", "offline", "8x1-control", "8x8-controls"}
    goals = results["serve"]
    for key in ("throughput_16_vs_1", "mixed_vs_one", "ttft_stream_vs_offline"):
        assert goals[key]["value"] is not None and goals[key]["value"] > 0, key
    assert goals["identical_alone"]["rows"] == 4 and goals["identical_alone"]["met"], goals["identical_alone"]
    soak = results["serve"]["soak"]
    assert soak["errors"] == 0 and soak["requests"] >= 3 and soak["peak_rss_mb"] > 0
    assert results["methods"]["16-clients"]["ttft_p50"] > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["serve"]["identical_alone"]["identical"] == 4
    for name in ("report.md", "serve.md", "serve.png", "generations.jsonl"):
        assert (tmp_path / name).is_file(), name
    assert "16 clients / 1 client" in (tmp_path / "serve.md").read_text()
