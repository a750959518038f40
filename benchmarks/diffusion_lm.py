"""Table and plot for ``lmcontrol bench diffusion-lm`` (the benchmark itself is ``lmcontrol.diffusion_lm.bench``):

    nice -n 10 lmcontrol bench diffusion-lm --n 210 --samples 4 --out runs/bench-diffusion-lm   # 30 targets/task
    python benchmarks/diffusion_lm.py runs/bench-diffusion-lm --figure docs/img/diffusion_lm_bench.png

``benchmarks/diffusion_lm.json`` holds the committed figures (produced before the suite existed, by this script's
earlier version; the suite runs the same methods, targets, metrics and judge, with the harness's seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TASKS = {  # result column -> row label
    "success_attribute": "semantic content",
    "success_pos": "POS",
    "success_span": "syntax spans",
    "success_length": "length",
    "success_attribute+pos": "POS + semantic content (attribute)",
    "pos_success_attribute+pos": "POS + semantic content (POS)",
    "success_infill": "infilling",
    "attribute_chance": "unconstrained (chance of the attribute targets)",
}
SWEEP = {"diffusion-lm-50": 50, "diffusion-lm": 100, "diffusion-lm-200": 200}


def cell(row: dict, key: str) -> str:
    """``value ± se`` (or the value alone, or empty)."""
    if key not in row or row[key] is None:
        return ""
    se = row.get(f"{key}_se")
    return f"{row[key]} ± {se}" if se is not None else str(row[key])


def table(methods: dict[str, dict], human: float | None, human_se: float | None = None) -> str:
    """One line per task: success (%) and lm-score (± standard errors) of Diffusion-LM and FUDGE AR, the steps
    sweep, then seconds per sample."""
    lines = [
        "| task | Diffusion-LM success % | Diffusion-LM lm-score | FUDGE AR success % | FUDGE AR lm-score |",
        "|---|---|---|---|---|",
    ]
    dlm, ar = methods.get("diffusion-lm", {}), methods.get("fudge-ar", {})
    for col, label in TASKS.items():
        if col in dlm or col in ar:
            key = "lm_score_" + (col.split("success_")[-1] if col != "attribute_chance" else "unconstrained")
            cells = [cell(dlm, col), cell(dlm, key), cell(ar, col), cell(ar, key)]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(f"| all samples | | {cell(dlm, 'lm_score')} | | {cell(ar, 'lm_score')} |")
    if human is not None:
        lines.append(f"| human E2E references | | {human}" + (f" ± {human_se}" if human_se else "") + " | | |")
    sweep = [(steps, methods[m]) for m, steps in sorted(SWEEP.items(), key=lambda kv: kv[1]) if m in methods]
    if sweep:
        lines += ["", "| steps | " + " | ".join(TASKS[c] for c in TASKS if c != "attribute_chance") + " |"]
        lines.append("|---" * (len(TASKS)) + "|")
        for steps, row in sweep:
            lines.append(f"| {steps} | " + " | ".join(cell(row, c) for c in TASKS if c != "attribute_chance") + " |")
    lines.append("")
    for name, row in methods.items():
        lines.append(f"- sec/sample, {name}: {row.get('sec/sample', float('nan')):.3g}")
    return "\n".join(lines)


def plot(methods: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    cols = [c for c in TASKS if c != "attribute_chance" and any(c in m for m in methods.values())]
    for k, (method, color) in enumerate((("diffusion-lm", "tab:blue"), ("fudge-ar", "tab:orange"))):
        vals = [methods.get(method, {}).get(c) or 0 for c in cols]
        axes[0].barh([i + 0.4 * k for i in range(len(cols))], vals, height=0.4, color=color, label=method)
    axes[0].set_yticks([i + 0.2 for i in range(len(cols))], [TASKS[c] for c in cols])
    axes[0].set(xlabel="control success (%)", xlim=(0, 100))
    axes[0].invert_yaxis()
    axes[0].legend(loc="lower right")
    sweep = {steps: methods[m] for m, steps in SWEEP.items() if m in methods}
    if sweep:
        xs = sorted(sweep)
        axes[1].plot(xs, [sweep[x].get("success_attribute", 0) for x in xs], "o-")
        ax2 = axes[1].twinx()
        ax2.plot(xs, [sweep[x]["sec/sample"] for x in xs], "s--", color="tab:red")
        ax2.set_ylabel("seconds per sample", color="tab:red")
        axes[1].set(xlabel="diffusion steps", ylabel="semantic-content success (%)", xticks=xs,
                    title="Diffusion-LM steps sweep")  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="output directory of 'lmcontrol bench diffusion-lm'")
    ap.add_argument("--figure", type=Path, default=Path("docs/img/diffusion_lm_bench.png"))
    args = ap.parse_args(argv)
    results = json.loads((args.run / "results.json").read_text())
    human = results.get("human_references_lm_score"), results.get("human_references_lm_score_se")
    print(table(results["methods"], *human))
    if results.get("latency_batch8"):
        print("\nlatency, one batch of 8 x 64 tokens (s):", json.dumps(results["latency_batch8"]))
    plot(results["methods"], args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
