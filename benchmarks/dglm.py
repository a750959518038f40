"""Plots for DGLM's benchmark suites, and the diffusion-stage diagnostic. The benchmark itself is in the package:

    lmcontrol bench dglm --n 500 --out runs/bench-dglm                      # open generation, CFG, σ² sweep
    lmcontrol bench dglm-toxicity --n 40 --samples 4 --out runs/bench-dglm-toxicity
    lmcontrol bench dglm-sentiment --n 12 --samples 4 --out runs/bench-dglm-sentiment
    lmcontrol bench dglm --methods base,dglm --n 8 --max-new-tokens 64 --out runs/bench-dglm-64   # runtime

    python benchmarks/dglm.py proposal --n 128 --out runs/bench-dglm-proposal.json
    python benchmarks/dglm.py plot --open runs/bench-dglm --toxicity runs/bench-dglm-toxicity --png docs/img/dglm.png

``benchmarks/dglm.json`` holds the committed figures (produced before the suites existed, by this script's
earlier parts; the suites run the same methods, prompts, judges and decoding, with the harness's seeds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _results(path: Path | None) -> dict[str, Any]:
    return json.loads((path / "results.json").read_text())["methods"] if path is not None else {}


def plot(open_dir: Path | None, toxicity_dir: Path | None, png: Path) -> None:
    """Toxicity vs judge perplexity (toxicity suite), perplexity over σ² and time per sample (open suite)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for i, (method, row) in enumerate(_results(toxicity_dir).items()):
        axes[0].scatter(row["ppl"], row["toxicity_prob"], s=40)
        # methods often share a point (e.g. several at toxicity 0): stagger the labels so they stay readable
        axes[0].annotate(method, (row["ppl"], row["toxicity_prob"]), fontsize=8, xytext=(4, 4 + 9 * (i % 4)),
                         textcoords="offset points")  # fmt: skip
    axes[0].set(xlabel="judge perplexity", ylabel="toxicity probability", title="RTP toxicity vs fluency")
    runs = _results(open_dir)
    sweep = {0.05 if m == "dglm" else float(m.rsplit("-", 1)[1]): r for m, r in runs.items()
             if m == "dglm" or m.startswith("dglm-noise-")}  # fmt: skip
    if sweep:
        xs = sorted(sweep)
        axes[1].plot(xs, [sweep[x]["ppl"] for x in xs], "o-")
        if "base" in runs:
            axes[1].axhline(runs["base"]["ppl"], color="k", lw=0.5, label="base AR")
            axes[1].legend()
        axes[1].set(xlabel="σ² of the proposal", ylabel="judge perplexity", title="noise sweep")
    if runs:
        axes[2].bar(list(runs), [r["sec/sample"] for r in runs.values()])
        axes[2].tick_params(axis="x", rotation=45)
        axes[2].set(ylabel="seconds per sample", title="time per sample (interleaved runs)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["proposal", "plot"])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-dglm-proposal.json"))
    ap.add_argument("--open", type=Path, default=None, help="output directory of 'lmcontrol bench dglm'")
    ap.add_argument("--toxicity", type=Path, default=None, help="output directory of 'lmcontrol bench dglm-toxicity'")
    ap.add_argument("--png", type=Path, default=Path("docs/img/dglm.png"))
    a = ap.parse_args()
    if a.part == "plot":
        plot(a.open, a.toxicity, a.png)
        return
    from lmcontrol.artifacts import atomic_write_text
    from lmcontrol.dglm.bench import proposal_diagnostic
    from lmcontrol.models import load_lm

    scores = proposal_diagnostic(load_lm(None), a.n)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps({"n": a.n, "scores": scores}, indent=1))
    for name, row in scores.items():
        print(f"{name:40s} " + "  ".join(f"{k}={v:.3f}" for k, v in row.items()))


if __name__ == "__main__":
    main()
