"""Plot the RE-Control ablation (Kong et al. 2024, Fig. 3): reward and diversity against the step size alpha and
the number of gradient updates n. The numbers come from the package's suite:

    lmcontrol bench recontrol-ablation --n 48 --out runs/recontrol-ablation
    python benchmarks/recontrol_ablation.py runs/recontrol-ablation/results.json --out docs/img/recontrol_ablation.png

It also plots the committed JSON of the earlier script (``benchmarks/recontrol_ablation*.json``: a ``results``
list of ``{step_size, steps, reward, diversity}``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def points(path: Path) -> tuple[list[dict], str]:
    """``[{step_size, steps, reward, diversity}]`` from a suite's results.json or the legacy ablation JSON."""
    data = json.loads(path.read_text())
    if "results" in data:  # legacy: benchmarks/recontrol_ablation*.json
        return data["results"], f"{data['n']} validation HH prompts, {data['max_new_tokens']} tokens, greedy"
    out = []
    for name, vals in data["methods"].items():
        m = re.fullmatch(r"a([0-9.]+)-n([0-9]+)", name)
        alpha, steps = (float(m.group(1)), int(m.group(2))) if m else (0.0, 0)  # "base" = alpha 0
        out.append({"step_size": alpha, "steps": steps, "reward": vals["reward"], "diversity": vals["diversity"]})
    return out, f"{data['n']} validation HH prompts, {data['generation']['max_new_tokens']} tokens, greedy"


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
        pts = sorted((r[key], r["reward"], r["diversity"]) for r in results if r["steps"] > 0 and r[other] == fixed)
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
    p.add_argument("results", type=Path, help="results.json of `lmcontrol bench recontrol-ablation` (or legacy JSON)")
    p.add_argument("--fixed-steps", type=int, default=5)
    p.add_argument("--fixed-alpha", type=float, default=4.0)
    p.add_argument("--out", type=Path, default=Path("runs/recontrol-ablation/ablation.png"))
    args = p.parse_args()
    results, what = points(args.results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(results, args.fixed_steps, args.fixed_alpha, args.out, f"RE-Control ablation: {what} (0 = base)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
