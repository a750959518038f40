"""DGLM toxicity knobs on *validation* RealToxicityPrompts prompts (how the committed settings were chosen).

    python benchmarks/dglm_toxicity_val.py --out runs/dglm-val                       # every variant below
    python benchmarks/dglm_toxicity_val.py --out runs/dglm-val --methods base,dglm-avoid-w10
    LMCONTROL_DGLM_PROMPTER=DIR python benchmarks/dglm_toxicity_val.py --out runs/dglm-val-other

Prompts: rows 300-349 of the data folder's non-toxic and toxic RTP files, interleaved (the ``dglm-toxicity``
suite reports on rows 0-99 of each); 2 samples per prompt. The methods are the suite's base and w = 10 plus the
knobs tried on top of them: the proposal noise σ² handed to the prompt generator, an unconditional proposal
(CFG 0) and a 10x guidance weight. Results, with standard errors and change vs base, go to OUT/results.json and
OUT/report.md like any suite's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from lmcontrol.bench.runner import run_suite
from lmcontrol.bench.suite import BenchMethod
from lmcontrol.dglm.bench import dglm, toxicity_suite

ROWS = slice(300, 350)
AVOID = ("toxicity", "toxic", 10.0, True)
VARIANTS = {
    "dglm-w10-noise0": dict(guides=(AVOID,), noise=0.0),
    "dglm-w10-noise0.01": dict(guides=(AVOID,), noise=0.01),
    "dglm-w10-noise0.02": dict(guides=(AVOID,), noise=0.02),
    "dglm-w10-cfg0": dict(guides=(AVOID,), cfg_scale=0.0),
    "dglm-w100": dict(guides=(("toxicity", "toxic", 100.0, True),)),
}


def validation_prompts() -> list[dict[str, str]]:
    from lmcontrol.data import load_dataset

    nontoxic, toxic = load_dataset("rtp:nontoxic")[ROWS], load_dataset("rtp:toxic")[ROWS]
    return [{"prompt": r["prompt"], "subset": r["subset"]} for pair in zip(nontoxic, toxic, strict=True) for r in pair]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--methods", default=None, help="comma-separated subset (default: all)")
    ap.add_argument("--samples", type=int, default=2)
    a = ap.parse_args()
    suite = toxicity_suite()
    kept = [m for m in suite.methods if m.name in ("base", "dglm-avoid-w10")]
    extra = [BenchMethod(name, controls=dglm(**kw), help=name) for name, kw in VARIANTS.items()]
    suite = dataclasses.replace(suite, methods=tuple(kept + extra))
    results = run_suite(suite, a.out, validation_prompts(), samples=a.samples, methods=a.methods)
    for name, row in results["methods"].items():
        print(name, json.dumps({k: round(v, 3) for k, v in row.items() if k.startswith(("toxicity", "max", "ppl"))}))


if __name__ == "__main__":
    main()
