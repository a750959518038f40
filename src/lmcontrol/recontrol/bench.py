"""RE-Control bench suites: ``recontrol`` (HH reward) and ``recontrol-sentiment`` / ``recontrol-harmless``.

``recontrol-{sentiment,harmless}`` steer towards a text attribute (``lmcontrol.eval.rewards_text``): the
value network and the static-RE direction are trained on one scorer (the *train* reward) and every
method is also scored by an independent *judge* from another model family. The prompts are the ``bench``
part of ``hh_prompt_split`` of the attribute's data set (never rolled out, never used for tuning), or
``--prompts FILE``; decoding is greedy with 32 new tokens. Methods: ``base``, ``prompting`` (a system
message asking for the attribute), ``static-re``, ``recontrol`` (the card's step size and steps, chosen
on the ``val`` part), ``recontrol+prompting`` and ``best-of-4`` (4 samples at T = 0.7 ranked by the
train reward; 4x the cost, run it with ``--methods``). ``finalize`` adds, per method: mean and standard
error of both rewards, the judge's success rate, the paired difference to base (mean, SE, z) and the win
rate against base (ties count half) by each reward — into ``results.json`` and ``report.md``.

``recontrol`` (below) is the original HH comparison.

Prompts are the ``bench`` part of ``hh_prompt_split`` (first human turns never used for rollouts or for
choosing alpha / n). Decoding is greedy (as in the paper), so differences come from the methods, not from
sampling noise; best-of-4 samples its candidates at T = 0.7. The value network and the static direction
come from ``$LMCONTROL_RECONTROL_ARTIFACT`` or ``artifacts/recontrol-hh``.

The harness reports reward, judge perplexity, diversity, coherence and timing; the win rate against base
by the reward (pairs of responses to the same prompt; ties count half) is added to ``results.json`` and
``report.md`` by ``add_win_rates`` — run ``python -m lmcontrol.recontrol.bench OUT`` after a bench run.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmcontrol.artifacts import atomic_write_text
from lmcontrol.bench.stats import mean_se
from lmcontrol.settings import ARTIFACTS_DIR

BATCH_SIZE = 16
ATTRIBUTE_BATCH_SIZE = 32  # short prompts: larger batches decode faster per response on CPU
MAX_NEW_TOKENS = 32


def artifact_dir() -> Path:
    return Path(os.environ.get("LMCONTROL_RECONTROL_ARTIFACT", ARTIFACTS_DIR / "recontrol-hh"))


def _spec(text: str):
    from lmcontrol.controls import parse_control_spec

    return parse_control_spec(text)


def _controls(*specs: str):
    """``controls(lm)`` building each ``--control`` spec (``{A}`` = the artifact directory)."""

    def build(lm):
        from lmcontrol.controls import build_control

        return [build_control(_spec(s.format(A=artifact_dir())), lm) for s in specs]

    return build


def make_suite():
    from lmcontrol.bench.suite import BenchMethod, BenchSuite
    from lmcontrol.generation import GenerationConfig

    def prompts(n: int) -> list[dict[str, Any]]:
        from lmcontrol.recontrol.rollouts import hh_prompt_split

        return [{"prompt": p} for p in hh_prompt_split(part="bench")[:n]]

    return BenchSuite(
        name="recontrol",
        prompts=prompts,
        methods=(
            BenchMethod("base", help="greedy decoding, no control"),
            BenchMethod("prompting", controls=_controls("system"), help="helpful-and-harmless system prompt"),
            BenchMethod("static-re", controls=_controls("static-re:{A}"), help="mean reward direction added"),
            BenchMethod("cd", controls=_controls("cd:{A},topk=5"), help="top-5 re-ranked by V (lookahead)"),
            BenchMethod(
                "cd-prefix",
                controls=_controls("cd-prefix:{A},topk=5,beta=10"),
                help="logits + 10 V (lookahead)",
            ),
            BenchMethod("best-of-4", controls=_controls("best-of:4,reward=hh"), help="best of 4 samples by hh"),
            BenchMethod("recontrol", controls=_controls("recontrol:{A}"), help="RE-Control (card's alpha, n)"),
            BenchMethod(
                "recontrol+prompting",
                controls=_controls("system", "recontrol:{A}"),
                help="RE-Control with the system prompt",
            ),
        ),
        metrics=("reward:hh", "ppl", "diversity", "coherence"),
        generation=GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, chat=True),
        batch_size=BATCH_SIZE,
        help="RE-Control vs prompting, static RE, CD, CD-prefix, best-of-4 on held-out HH prompts",
    )


ABLATION_ALPHAS = (2.0, 4.0, 8.0, 16.0, 32.0)  # step sizes at n = ABLATION_FIXED_STEPS
ABLATION_STEPS = (1, 3, 5, 10)  # updates at alpha = ABLATION_FIXED_ALPHA
ABLATION_FIXED_STEPS = 5
ABLATION_FIXED_ALPHA = 4.0


def ablation_name(alpha: float, steps: int) -> str:
    return f"a{alpha:g}-n{steps}"


def make_ablation_suite():
    """``lmcontrol bench recontrol-ablation`` (Kong et al. 2024, Fig. 3): reward and diversity against the step
    size alpha and the number of updates n, greedy, on the ``val`` part of the HH prompt split (never the bench
    part); the numbers that choose the card's recommended alpha / n. ``benchmarks/recontrol_ablation.py`` plots
    its ``results.json``."""
    from lmcontrol.bench.suite import BenchMethod, BenchSuite
    from lmcontrol.generation import GenerationConfig

    def prompts(n: int) -> list[dict[str, Any]]:
        from lmcontrol.recontrol.rollouts import hh_prompt_split

        return [{"prompt": p} for p in hh_prompt_split(part="val")[:n]]

    grid = [(a, ABLATION_FIXED_STEPS) for a in ABLATION_ALPHAS] + [(ABLATION_FIXED_ALPHA, n) for n in ABLATION_STEPS]
    methods = [
        BenchMethod(
            ablation_name(a, n),
            controls=_controls(f"recontrol:{{A}},step_size={a:g},steps={n}"),
            help=f"RE-Control, alpha = {a:g}, n = {n}",
        )
        for a, n in dict.fromkeys(grid)
    ]
    return BenchSuite(
        name="recontrol-ablation",
        prompts=prompts,
        methods=(BenchMethod("base", help="greedy decoding, no control (alpha = 0)"), *methods),
        metrics=("reward:hh", "diversity"),
        generation=GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, chat=True),
        batch_size=BATCH_SIZE,
        help="RE-Control ablation: reward and diversity vs step size alpha and updates n (val HH prompts)",
    )


def attribute_artifact(attr: str) -> Path:
    """The value-network directory of an attribute suite (``$LMCONTROL_RECONTROL_<ATTR>_ARTIFACT``)."""
    env = f"LMCONTROL_RECONTROL_{attr.upper()}_ARTIFACT"
    return Path(os.environ.get(env, ARTIFACTS_DIR / f"recontrol-{attr}"))


def _attr_controls(attr: str, *specs: str):
    def build(lm):
        from lmcontrol.controls import build_control

        return [build_control(_spec(s.format(A=attribute_artifact(attr))), lm) for s in specs]

    return build


def win_indicators(scores: Sequence[float], base: Sequence[float]) -> list[float]:
    """1 where the method beats base on the same prompt, 1/2 on a tie, 0 otherwise."""
    return [1.0 if s > b else 0.5 if s == b else 0.0 for s, b in zip(scores, base, strict=True)]


def paired_stats(scores: Sequence[float], base: Sequence[float], prefix: str) -> dict[str, float]:
    """Mean, SE and z of the per-prompt difference to base, and the win rate (with its SE)."""
    d_mean, d_se = mean_se([s - b for s, b in zip(scores, base, strict=True)])
    w_mean, w_se = mean_se(win_indicators(scores, base))
    z = d_mean / d_se if d_se and math.isfinite(d_se) and d_se > 0 else float("nan")
    return {
        f"{prefix}_delta": d_mean,
        f"{prefix}_delta_se": d_se,
        f"{prefix}_z": z,
        f"{prefix}_win": w_mean,
        f"{prefix}_win_se": w_se,
    }


def attribute_stats(attr: str, by_method: dict[str, dict[str, str]], base: str = "base") -> dict[str, dict[str, float]]:
    """Per method: train reward and judge (mean, SE), judge success rate, paired stats vs ``base``.

    ``by_method`` maps method -> {prompt: response}; paired statistics use the prompts it shares with base.
    """
    from lmcontrol.eval.rewards_text import attribute, reward_fn

    a = attribute(attr)
    fns = {"reward": reward_fn(a.train), "judge": reward_fn(a.judge)}
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for method, texts in by_method.items():
        prompts = list(texts)
        responses = [texts[p] for p in prompts]
        scores[method] = {k: dict(zip(prompts, fn(prompts, responses), strict=True)) for k, fn in fns.items()}
    out: dict[str, dict[str, float]] = {}
    for method, per in scores.items():
        row: dict[str, float] = {}
        for k in fns:
            row[k], row[f"{k}_se"] = mean_se(list(per[k].values()))
        row["success"], row["success_se"] = mean_se([float(v > a.threshold) for v in per["judge"].values()])
        if base in scores:
            shared = [p for p in per["reward"] if p in scores[base]["reward"]]
            for k in fns:
                row.update(paired_stats([per[k][p] for p in shared], [scores[base][k][p] for p in shared], k))
        out[method] = row
    return out


def _responses(out: Path) -> dict[str, dict[str, str]]:
    from lmcontrol.bench.runner import GENERATIONS, read_generations

    rows = [r for r in read_generations(Path(out) / GENERATIONS) if int(r.get("sample", 0)) == 0]
    by_method: dict[str, dict[str, str]] = {}
    for r in rows:
        by_method.setdefault(r["method"], {})[r["prompt"]] = r["continuation"]
    return by_method


def _finalize(attr: str):
    def finalize(results: dict[str, Any], out: Path) -> dict[str, Any]:
        by_method = _responses(out)
        wanted = set(results["methods"])
        prompts = None
        if results["methods"]:
            first = next(iter(results["methods"]))
            prompts = set(by_method.get(first, {}))
        by_method = {
            m: {p: t for p, t in texts.items() if prompts is None or p in prompts}
            for m, texts in by_method.items()
            if m in wanted
        }
        base = next(iter(results["methods"]))
        for method, stats in attribute_stats(attr, by_method, base).items():
            results["methods"][method] = {**stats, **results["methods"][method]}
        results["attribute"] = _attribute_info(attr)
        return results

    return finalize


def _attribute_info(attr: str) -> dict[str, Any]:
    from lmcontrol.eval.rewards_text import attribute

    a = attribute(attr)
    return {
        "name": a.name,
        "reward": a.train_spec,
        "judge": a.judge_spec,
        "success": f"judge > {a.threshold}",
        "artifact": str(attribute_artifact(attr)),
    }


def make_attribute_suite(attr: str):
    """The ``recontrol-<attr>`` suite (see the module docstring)."""
    from lmcontrol.bench.suite import BenchMethod, BenchSuite
    from lmcontrol.eval.rewards_text import attribute
    from lmcontrol.generation import GenerationConfig

    a = attribute(attr)

    def prompts(n: int) -> list[dict[str, Any]]:
        from lmcontrol.recontrol.rollouts import hh_prompt_split

        return [{"prompt": p} for p in hh_prompt_split(a.prompts, part="bench")[:n]]

    ctl = lambda *specs: _attr_controls(attr, *specs)  # noqa: E731
    system = {"system": a.system}
    return BenchSuite(
        name=f"recontrol-{attr}",
        prompts=prompts,
        methods=(
            BenchMethod("base", help="greedy decoding, no control"),
            BenchMethod("prompting", overrides=system, help=f"system message: {a.system}"),
            BenchMethod("static-re", controls=ctl("static-re:{A}"), help="mean advantage direction added"),
            BenchMethod("recontrol", controls=ctl("recontrol:{A}"), help="RE-Control (card's alpha, n)"),
            BenchMethod(
                "recontrol+prompting",
                controls=ctl("recontrol:{A}"),
                overrides=system,
                help="RE-Control with the system message",
            ),
            BenchMethod(
                "best-of-4",
                controls=ctl(f"best-of:4,reward={a.train_spec}"),
                help="best of 4 samples (T=0.7) by the train reward",
            ),
        ),
        metrics=("ppl", "diversity"),
        generation=GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, chat=True),
        batch_size=ATTRIBUTE_BATCH_SIZE,
        help=f"RE-Control for {attr} ({a.train} reward, {a.judge} judge) vs prompting and static RE",
        finalize=_finalize(attr),
    )


def make_sentiment_suite():
    return make_attribute_suite("sentiment")


def make_harmless_suite():
    return make_attribute_suite("harmless")


def win_rates(out: Path, reward: str = "hh", base: str = "base") -> dict[str, float]:
    """Share of prompts where a method's response out-scores base's by the reward (ties count half)."""
    from lmcontrol.bench.runner import GENERATIONS, read_generations
    from lmcontrol.eval.reward import load_reward

    rows = [r for r in read_generations(Path(out) / GENERATIONS) if int(r.get("sample", 0)) == 0]
    by_method: dict[str, dict[str, str]] = {}
    for r in rows:
        by_method.setdefault(r["method"], {})[r["prompt"]] = r["continuation"]
    if base not in by_method:
        return {}
    fn = load_reward(reward)
    base_prompts = list(by_method[base])
    base_scores = dict(zip(base_prompts, fn(base_prompts, [by_method[base][p] for p in base_prompts]), strict=True))
    rates = {}
    for method, texts in by_method.items():
        shared = [p for p in texts if p in base_scores]
        scores = fn(shared, [texts[p] for p in shared])
        pairs = zip(shared, scores, strict=True)
        wins = [1.0 if s > base_scores[p] else 0.5 if s == base_scores[p] else 0.0 for p, s in pairs]
        rates[method] = sum(wins) / len(wins) if wins else float("nan")
    return rates


def add_win_rates(out: Path) -> dict[str, Any]:
    """Add ``win_rate`` (vs base, by the hh reward) to ``results.json`` and re-write the report."""
    from lmcontrol.bench.report import write_report
    from lmcontrol.bench.runner import RESULTS

    out = Path(out)
    results = json.loads((out / RESULTS).read_text())
    for method, rate in win_rates(out).items():
        if method in results["methods"]:
            results["methods"][method]["win_rate"] = rate
    atomic_write_text(out / RESULTS, json.dumps(results, indent=2))
    write_report(results, out)
    return results


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    res = add_win_rates(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bench"))
    sys.stdout.write((Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bench") / "report.md").read_text())
