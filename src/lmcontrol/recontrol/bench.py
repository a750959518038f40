"""``lmcontrol bench recontrol``: RE-Control against the paper's baselines on held-out HH prompts.

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
import os
import sys
from pathlib import Path
from typing import Any

from lmcontrol.settings import ARTIFACTS_DIR

BATCH_SIZE = 16
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
            BenchMethod(
                "best-of-4", controls=_controls("best-of:4,reward=hh"), help="best of 4 samples by hh"
            ),
            BenchMethod(
                "recontrol", controls=_controls("recontrol:{A}"), help="RE-Control (card's alpha, n)"
            ),
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
    base_scores = dict(
        zip(base_prompts, fn(base_prompts, [by_method[base][p] for p in base_prompts]), strict=True)
    )
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
    (out / RESULTS).write_text(json.dumps(results, indent=2))
    write_report(results, out)
    return results


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    res = add_win_rates(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bench"))
    sys.stdout.write((Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bench") / "report.md").read_text())
