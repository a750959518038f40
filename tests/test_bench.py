"""The bench harness: interleaved plan, resume, outputs (fake methods, fast) and the base suite (slow)."""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import pytest

from lmcontrol import LMControlError
from lmcontrol.bench import runner
from lmcontrol.bench.suite import BenchMethod, BenchSuite
from lmcontrol.generation import GenerationConfig, GenerationOutput

FAKE_LM = types.SimpleNamespace(info=types.SimpleNamespace(name="fake-lm"))


class FakeGenerator:
    """A method with its own generator: echoes the prompt and the seed, counts the prompts it was asked."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.calls: list[tuple[list[str], int | None]] = []

    def __call__(self, lm, prompts: list[str], config: GenerationConfig) -> GenerationOutput:
        self.calls.append((list(prompts), config.seed))
        texts = [f"{self.tag} {p} seed {config.seed} word word" for p in prompts]
        return GenerationOutput(
            prompts=list(prompts),
            texts=texts,
            token_ids=[[1, 2, 3] for _ in prompts],
            seconds=0.01 * len(prompts),
            first_token_seconds=0.0,
            new_tokens=3 * len(prompts),
        )

    def asked(self) -> int:
        return sum(len(p) for p, _ in self.calls)


def _suite(a: FakeGenerator, b: FakeGenerator, batch_size: int = 2) -> BenchSuite:
    return BenchSuite(
        name="fake",
        prompts=lambda n: [{"prompt": f"prompt {i}"} for i in range(n)],
        methods=(BenchMethod("a", run=a), BenchMethod("b", run=b)),
        metrics=("dist", "diversity"),
        generation=GenerationConfig(max_new_tokens=4, temperature=1.0),
        batch_size=batch_size,
    )


def test_plan_interleaves_and_rotates():
    prompts = [{"prompt": f"p{i}"} for i in range(3)]
    methods = [BenchMethod("a"), BenchMethod("b")]
    units = runner.plan(prompts, methods, samples=2, batch_size=2, done=set())
    order = [(u.batch, u.sample, u.method) for u in units]
    assert order == [
        (0, 0, "a"), (0, 0, "b"), (0, 1, "b"), (0, 1, "a"),
        (1, 0, "a"), (1, 0, "b"), (1, 1, "b"), (1, 1, "a"),
    ]  # fmt: skip
    assert units[0].prompts == (0, 1) and units[4].prompts == (2,)
    done = {("a", "p0", 0), ("a", "p1", 0), ("b", "p0", 0)}
    units = runner.plan(prompts, methods, samples=1, batch_size=2, done=done)
    assert [(u.method, u.prompts) for u in units] == [
        ("b", (1,)),
        ("b", (2,)),
        ("a", (2,)),
    ]  # batch 1: b first


def test_run_writes_outputs_and_resumes(tmp_path: Path):
    a, b = FakeGenerator("A"), FakeGenerator("B")
    suite = _suite(a, b)
    prompts = suite.prompts(3)
    res = runner.run_suite(suite, tmp_path, prompts, samples=2, seed=7, lm=FAKE_LM)
    rows = runner.read_generations(tmp_path / runner.GENERATIONS)
    assert len(rows) == 3 * 2 * 2
    assert set(rows[0]) >= {"method", "prompt", "continuation", "seconds", "sample", "seed"}
    # the same sample of the same batch has the same seed for every method
    seeds = {(r["method"], r["prompt"], r["sample"]): r["seed"] for r in rows}
    assert all(seeds[("a", p, s)] == seeds[("b", p, s)] for _, p, s in seeds)
    assert res["suite"] == "fake" and res["model"] == "fake-lm" and res["n"] == 3 and res["samples"] == 2
    assert set(res["methods"]) == {"a", "b"} and "dist-3" in res["methods"]["a"]
    assert res["methods"]["a"]["overhead"] == pytest.approx(1.0)
    for name in ("results.json", "report.md", "metrics.png", "timing.png"):
        assert (tmp_path / name).is_file(), name
    assert "| a |" in (tmp_path / "report.md").read_text()

    # the same command again: nothing new is generated (not even a warm-up)
    asked = a.asked(), b.asked()
    runner.run_suite(suite, tmp_path, prompts, samples=2, seed=7, lm=FAKE_LM)
    assert (a.asked(), b.asked()) == asked
    assert len(runner.read_generations(tmp_path / runner.GENERATIONS)) == 12

    # an interrupted run (a torn last line) resumes with exactly the missing triples
    path = tmp_path / runner.GENERATIONS
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:5]) + "\n" + lines[5][:10])
    runner.run_suite(suite, tmp_path, prompts, samples=2, seed=7, lm=FAKE_LM)
    rows = runner.read_generations(path)
    keys = [(r["method"], r["prompt"], r["sample"]) for r in rows]
    assert len(keys) == len(set(keys)) == 12

    # more samples only adds the new ones
    before = a.asked()
    runner.run_suite(suite, tmp_path, prompts, samples=3, seed=7, lm=FAKE_LM)
    assert a.asked() - before == 3 + 1  # 3 prompts + 1 warm-up
    assert len(runner.read_generations(path)) == 18


def test_resume_refuses_other_settings(tmp_path: Path):
    suite = _suite(FakeGenerator("A"), FakeGenerator("B"))
    runner.run_suite(suite, tmp_path, suite.prompts(2), seed=1, lm=FAKE_LM)
    with pytest.raises(LMControlError, match="other settings"):
        runner.run_suite(suite, tmp_path, suite.prompts(2), seed=2, lm=FAKE_LM)


def test_method_selection_and_validation():
    suite = _suite(FakeGenerator("A"), FakeGenerator("B"))
    assert [m.name for m in suite.select("b")] == ["b"]
    with pytest.raises(LMControlError, match="no method 'c'"):
        suite.select("a,c")
    with pytest.raises(LMControlError, match="unknown GenerationConfig"):
        BenchMethod("x", overrides={"temprature": 1.0})
    with pytest.raises(LMControlError, match="not both"):
        BenchMethod("x", controls=lambda lm: [], run=FakeGenerator("x"))


def test_base_suite_is_registered_and_lists_methods(capsys):
    from lmcontrol.cli.main import main

    assert main(["bench", "base", "--list-methods"]) == 0
    out = capsys.readouterr().out
    assert "sampling" in out and "prompting" in out
    assert main(["bench", "nope"]) == 2
    assert "unknown benchmark suite 'nope'" in capsys.readouterr().err


def test_bench_cli_bad_prompt_file(tmp_path: Path, capsys):
    from lmcontrol.cli.main import main

    bad = tmp_path / "p.jsonl"
    bad.write_text(json.dumps({"text": "no prompt field"}) + "\n")
    assert main(["bench", "base", "--prompts", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no 'prompt'" in err


@pytest.mark.slow
def test_base_suite_end_to_end(tmp_path: Path):
    from lmcontrol.cli.main import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in ["The weather today is", "My favourite food is"])
    )
    out = tmp_path / "b"
    argv = ["bench", "base", "--prompts", str(prompts), "--n", "2", "--samples", "2", "--max-new-tokens", "8"]
    assert main([*argv, "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == {"sampling", "prompting"}
    for col in (
        "ppl",
        "dist-3",
        "diversity",
        "coherence",
        "max_toxicity",
        "toxicity_prob",
        "vader",
        "overhead",
    ):
        assert col in res["methods"]["prompting"], col
    assert len((out / "generations.jsonl").read_text().splitlines()) == 2 * 2 * 2


@pytest.mark.slow
def test_prefix_suite_trains_a_baseline_and_scores_it(tiny, tmp_path: Path):
    """`lmcontrol bench prefix` on the tiny model: a baseline trained on the spot (1 step), decoded on the same
    seeded E2E MRs as the base model, scored with BLEU / ROUGE-L."""
    from lmcontrol.bench.runner import run_suite
    from lmcontrol.prefix.bench import e2e_rows, prefix_suite

    suite = prefix_suite(examples=(8,), steps=1, work_dir=tmp_path / "work")
    assert [m.name for m in suite.methods] == ["base", "prefix-e2e", "prefix-8", "lora-8", "full-8"]
    rows = e2e_rows(2)
    assert rows == e2e_rows(4)[:2] and all(r["reference"] for r in rows)  # a seeded subset, stable in n
    suite = dataclasses.replace(suite, generation=dataclasses.replace(suite.generation, max_new_tokens=4))
    res = run_suite(suite, tmp_path / "out", rows, methods="base,prefix-8", lm=tiny)
    for name in ("base", "prefix-8"):
        assert {"bleu", "rouge-l", "sec/sample"} <= set(res["methods"][name])
    assert (tmp_path / "work" / "prefix-8x1" / "config.json").is_file()  # the trained prefix artifact


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_lora_and_full_baselines_train_a_copy(tiny, tmp_path: Path, kind):
    """The LoRA / full fine-tuning baselines change the weights they decode with, never the caller's model."""
    import torch

    from lmcontrol.prefix.bench import Baseline, train_baseline

    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    tuned, controls, metrics = train_baseline(tiny, Baseline(kind, examples=8, steps=1, lr=1e-2), tmp_path)
    assert controls == [] and metrics["trainable_parameters"] > 0 and metrics["train_loss_final"] > 0
    after = tuned.model.state_dict()
    assert any(not torch.equal(after[k], before[k]) for k in before if k in after)
    for k, v in tiny.model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.slow
def test_prefix_throughput_suite_runs_every_mode(tiny, tmp_path: Path):
    from lmcontrol.bench.runner import run_suite
    from lmcontrol.prefix.bench import throughput_suite

    rows = [{"prompt": f"name : Place {i} | Type : pub\n"} for i in range(8)]
    suite = throughput_suite()
    suite = dataclasses.replace(suite, generation=dataclasses.replace(suite.generation, max_new_tokens=3))
    res = run_suite(suite, tmp_path, rows, lm=tiny)
    assert set(res["methods"]) == {"single-prefix", "mixed-8-prefixes", "separate-batch1"}
    assert all(m["tokens/s"] > 0 for m in res["methods"].values())


def test_plots_draw_standard_errors_as_error_bars(tmp_path, monkeypatch):
    import lmcontrol.bench.report as report

    calls = []
    real = report._bars
    monkeypatch.setattr(report, "_bars", lambda ax, names, values, title, errors=None: (
        calls.append((title, errors)), real(ax, names, values, title, errors)))  # fmt: skip
    results = {"suite": "s", "n": 2, "samples": 1, "methods": {
        "base": {"ppl": 10.0, "ppl_se": 1.0, "dist-1": 0.5},
        "other": {"ppl": 12.0, "ppl_se": 2.0, "dist-1": 0.6},
    }}  # fmt: skip
    report.write_plots(results, tmp_path)
    assert dict(calls) == {"ppl": [1.0, 2.0], "dist-1": None}  # no panel of its own for ppl_se
    assert (tmp_path / "metrics.png").is_file()
