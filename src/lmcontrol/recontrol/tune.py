"""Choose RE-Control's step size and number of updates (and static RE's scale) on validation prompts.

For every setting in the grid the base LM decodes the ``val`` part of ``hh_prompt_split`` of the
attribute's data set greedily (as the benchmark does) under the control; each setting is scored by the
*train* reward (the one the value network learned) — the judge is recorded but never used to choose, so
the benchmark's judge stays independent of every choice. The chosen setting maximises the mean train
reward among those whose diversity and judge-LM perplexity stay within ``tolerance`` of base's (the
issue's fluency budget). Results are appended to a JSONL file per setting, so a killed run resumes.

    python -m lmcontrol.recontrol.tune --attribute sentiment --n 48 \\
        --grid recontrol:4x5,recontrol:8x5,recontrol:16x5,static-re:1,static-re:2 --out runs/tune-sentiment.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

from lmcontrol import LMControlError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """Which settings to try, on how many validation prompts, and the fluency budget."""

    attribute: str
    artifact: str
    grid: tuple[str, ...]  # "recontrol:ALPHAxN" or "static-re:SCALE"
    n: int = 48
    max_new_tokens: int = 32
    batch_size: int = 16
    tolerance: float = 0.10  # diversity >= (1 - tol) * base, ppl <= (1 + tol) * base

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise LMControlError("n, max_new_tokens and batch_size must be >= 1")
        for g in self.grid:
            setting_spec(g, "DIR")  # validates


def setting_spec(setting: str, artifact: str) -> str | None:
    """``recontrol:8x5`` -> ``recontrol:DIR,step_size=8,steps=5``; ``static-re:2`` -> ``...,scale=2``."""
    kind, _, arg = setting.partition(":")
    try:
        if setting == "base":
            return None
        if kind == "recontrol":
            alpha, _, n = arg.partition("x")
            return f"recontrol:{artifact},step_size={float(alpha)},steps={int(n)}"
        if kind == "static-re":
            return f"static-re:{artifact},scale={float(arg)}"
    except ValueError:
        pass
    raise LMControlError(f"bad tuning setting '{setting}' (use base, recontrol:ALPHAxN or static-re:SCALE)")


def score_setting(lm: Any, prompts: list[str], texts: list[str], attribute: str) -> dict[str, float]:
    """Mean train reward, judge, diversity and judge-LM perplexity of one setting's responses."""
    from lmcontrol.bench.stats import mean_se
    from lmcontrol.eval.fluency import FluencyConfig, perplexities
    from lmcontrol.eval.rewards_text import attribute as get_attribute
    from lmcontrol.eval.rewards_text import reward_fn
    from lmcontrol.eval.text_metrics import diversity

    a = get_attribute(attribute)
    reward, reward_se = mean_se(reward_fn(a.train)(prompts, texts))
    judge, judge_se = mean_se(reward_fn(a.judge)(prompts, texts))
    ppl = [p for p in perplexities(prompts, texts, FluencyConfig(chat=True), lm=lm) if math.isfinite(p)]
    return {
        "reward": reward,
        "reward_se": reward_se,
        "judge": judge,
        "judge_se": judge_se,
        "diversity": sum(diversity(t) for t in texts) / len(texts),
        "ppl": sum(ppl) / len(ppl) if ppl else float("nan"),
    }


def choose(results: list[dict[str, Any]], kind: str, tolerance: float) -> dict[str, Any] | None:
    """The ``kind`` setting with the best train reward within the fluency budget (None if none fits)."""
    base = next((r for r in results if r["setting"] == "base"), None)
    if base is None:
        raise LMControlError("tuning results have no 'base' row")
    fits = [
        r
        for r in results
        if r["setting"].startswith(kind + ":")
        and r["diversity"] >= (1 - tolerance) * base["diversity"]
        and r["ppl"] <= (1 + tolerance) * base["ppl"]
    ]
    return max(fits, key=lambda r: r["reward"]) if fits else None


def tune(config: TuneConfig, out: Path, lm: Any = None) -> list[dict[str, Any]]:
    """Run (resuming) every setting of the grid plus base; returns one result dict per setting."""
    from lmcontrol.controls import build_control
    from lmcontrol.eval.rewards_text import attribute
    from lmcontrol.generation import GenerationConfig, generate
    from lmcontrol.models import load_lm
    from lmcontrol.recontrol.rollouts import hh_prompt_split

    lm = lm if lm is not None else load_lm(None)
    prompts = hh_prompt_split(attribute(config.attribute).prompts, "val")[: config.n]
    done = {}
    if out.is_file():
        done = {r["setting"]: r for r in map(json.loads, out.read_text().splitlines()) if r.get("n") == len(prompts)}
    gen = GenerationConfig(max_new_tokens=config.max_new_tokens, temperature=0.0, chat=True)
    results = []
    for setting in ("base", *config.grid):
        if setting in done:
            results.append(done[setting])
            continue
        spec = setting_spec(setting, config.artifact)
        controls = [build_control(spec, lm)] if spec else []
        texts, seconds = [], 0.0
        for i in range(0, len(prompts), config.batch_size):
            res = generate(lm, prompts[i : i + config.batch_size], gen, controls)
            texts += res.texts
            seconds += res.seconds
        row = {"setting": setting, "n": len(prompts), "seconds": seconds}
        row.update(score_setting(lm, prompts, texts, config.attribute))
        row["texts"] = texts
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        log.warning("%s: %s", setting, {k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
        results.append(row)
    return results


def main(argv: list[str] | None = None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--attribute", required=True)
    p.add_argument("--artifact", default=None, help="value-network directory (default artifacts/recontrol-ATTR)")
    p.add_argument("--grid", required=True, help="comma list of recontrol:ALPHAxN and static-re:SCALE")
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from lmcontrol.recontrol.bench import attribute_artifact

    artifact = args.artifact or str(attribute_artifact(args.attribute))
    cfg = TuneConfig(args.attribute, artifact, tuple(g.strip() for g in args.grid.split(",") if g.strip()), args.n)
    results = tune(cfg, args.out)
    for r in results:
        print(
            f"{r['setting']:>22}  reward {r['reward']:.3f}±{r['reward_se']:.3f}  judge {r['judge']:.3f}±"
            f"{r['judge_se']:.3f}  div {r['diversity']:.3f}  ppl {r['ppl']:.2f}  {r['seconds']:.0f}s"
        )
    for kind in ("recontrol", "static-re"):
        best = choose(results, kind, cfg.tolerance)
        print(f"chosen {kind}: {best['setting'] if best else 'none within the fluency budget'}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
