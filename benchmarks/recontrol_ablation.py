"""RE-Control ablation (Kong et al. 2024, Fig. 3): reward and diversity against the step size alpha and the
number of gradient updates n, on the held-out ``val`` part of the HH prompt split (never the bench part).

    python benchmarks/recontrol_ablation.py --artifact artifacts/recontrol-hh --n 64

Each setting is greedy-decoded on the same prompts; results go to ``OUT/ablation.json`` as they are made
(re-running skips finished settings) and the figure to ``OUT/ablation.png``. The same numbers choose the
recommended alpha / n stored on the artifact card.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

log = logging.getLogger("recontrol_ablation")


def run_setting(
    lm, value, prompts, step_size: float, steps: int, max_new_tokens: int, batch_size: int, reward_fn
) -> dict:
    from lmcontrol.eval.text_metrics import diversity
    from lmcontrol.generation import GenerationConfig, generate
    from lmcontrol.recontrol.config import ReControlConfig
    from lmcontrol.recontrol.control import ReControl

    cfg = GenerationConfig(max_new_tokens=max_new_tokens)
    texts, seconds = [], 0.0
    for i in range(0, len(prompts), batch_size):
        controls = [ReControl(value, ReControlConfig(step_size=step_size, steps=steps))] if steps > 0 else []
        t0 = time.perf_counter()
        texts += generate(lm, prompts[i : i + batch_size], cfg, controls=controls).texts
        seconds += time.perf_counter() - t0
    rewards = reward_fn(prompts, texts)
    return {
        "step_size": step_size,
        "steps": steps,
        "reward": sum(rewards) / len(rewards),
        "diversity": sum(diversity(t) for t in texts) / len(texts),
        "sec_per_response": seconds / len(prompts),
        "rewards": rewards,
        "texts": texts,
    }


def plot(results: list[dict], fixed_steps: int, fixed_alpha: float, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next(r for r in results if r["steps"] == 0)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, fixed, label in (
        (axes[0], "step_size", fixed_steps, "step size alpha"),
        (axes[1], "steps", fixed_alpha, "updates n"),
    ):
        other = "steps" if key == "step_size" else "step_size"
        pts = sorted(
            (r[key], r["reward"], r["diversity"]) for r in results if r["steps"] > 0 and r[other] == fixed
        )
        xs = [0] + [p[0] for p in pts]
        ax.plot(xs, [base["reward"]] + [p[1] for p in pts], "o-", color="C0", label="reward (hh)")
        ax.set_xlabel(f"{label} ({other} = {fixed})")
        ax.set_ylabel("average reward", color="C0")
        ax2 = ax.twinx()
        ax2.plot(xs, [base["diversity"]] + [p[2] for p in pts], "s--", color="C1", label="diversity")
        ax2.set_ylabel("diversity", color="C1")
    fig.suptitle(title or "RE-Control ablation on validation HH prompts (0 = base model)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", default="artifacts/recontrol-hh")
    p.add_argument("--reward", default="hh")
    p.add_argument("--n", type=int, default=64, help="val prompts")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--alphas", default="0.1,0.25,0.5,1.0,2.0")
    p.add_argument("--steps", default="1,3,5,10,30")
    p.add_argument("--fixed-steps", type=int, default=5)
    p.add_argument("--fixed-alpha", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/recontrol_ablation"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch

    from lmcontrol.eval.reward import load_reward
    from lmcontrol.models import load_lm
    from lmcontrol.recontrol.model import load_value_network
    from lmcontrol.recontrol.rollouts import hh_prompt_split

    torch.set_num_threads(args.threads)
    lm = load_lm(None)
    value = load_value_network(args.artifact, model_name=lm.info.name, hidden_size=lm.info.hidden_size)
    reward_fn = load_reward(args.reward)
    prompts = hh_prompt_split(part="val")[: args.n]
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "ablation.json"
    results: list[dict] = json.loads(store.read_text())["results"] if store.is_file() else []
    settings = [(0.0, 0)] + [(float(a), args.fixed_steps) for a in args.alphas.split(",")]
    settings += [(args.fixed_alpha, int(n)) for n in args.steps.split(",")]
    for alpha, steps in dict.fromkeys(settings):
        if any(r["step_size"] == alpha and r["steps"] == steps for r in results):
            continue
        r = run_setting(lm, value, prompts, alpha, steps, args.max_new_tokens, args.batch_size, reward_fn)
        results.append(r)
        log.info(
            "alpha=%s n=%s reward=%.4f diversity=%.4f s/resp=%.3f",
            alpha,
            steps,
            r["reward"],
            r["diversity"],
            r["sec_per_response"],
        )
        store.write_text(
            json.dumps(
                {
                    "artifact": args.artifact,
                    "reward": args.reward,
                    "n": len(prompts),
                    "max_new_tokens": args.max_new_tokens,
                    "results": results,
                },
                indent=1,
            )
        )
    title = f"RE-Control ablation: {len(prompts)} validation HH prompts, {args.max_new_tokens} tokens, greedy"
    plot(results, args.fixed_steps, args.fixed_alpha, args.out / "ablation.png", title + " (0 = base)")
    log.info("wrote %s and %s", store, args.out / "ablation.png")


if __name__ == "__main__":
    main()
