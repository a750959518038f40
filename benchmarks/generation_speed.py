"""Foundation benchmark: our decoding loop vs `model.generate`, model-load time, and CLI start-up.

Interleaves the two loops (ours, HF, ours, HF, ...) so both see the same machine load, and reports the
throughput ratio (goal ≥ 0.95) at batch 1 and 8. Writes JSON + a PNG next to --out.

    python benchmarks/generation_speed.py --out runs/generation-speed
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = [
    "Write one sentence about the sea.",
    "Explain photosynthesis to a child.",
    "List three uses of a paperclip.",
    "What is the capital of France and why is it famous?",
    "Describe a sunset over the mountains.",
    "Give me a short recipe for pancakes.",
    "Why do cats purr?",
    "Summarise the plot of Romeo and Juliet in two sentences.",
]


def time_load(cold: bool) -> float:
    """Seconds to load the embedded model in a fresh process (cold = empty LMCONTROL_CACHE)."""
    env = dict(os.environ)
    tmp = None
    if cold:
        tmp = tempfile.mkdtemp(prefix="lmc-cold-")
        env["LMCONTROL_CACHE"] = tmp
    code = (
        "import time; t=time.perf_counter(); from lmcontrol.models import load_lm; load_lm(); "
        "print(time.perf_counter()-t)"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def time_help(repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lmcontrol", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/generation-speed"))
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-cold", action="store_true", help="skip the ~20-30 s cold GGUF conversion timing")
    args = ap.parse_args()

    import torch

    from lmcontrol.generation import GenerationConfig, generate, tokenize_prompts
    from lmcontrol.models import load_lm

    lm = load_lm()
    results: dict[str, dict[str, float]] = {}
    for batch in (1, 8):
        prompts = PROMPTS[:batch]
        texts = [lm.format_prompt(p) for p in prompts]
        ids, mask = tokenize_prompts(lm, texts, chat=True)
        ours, hf = [], []
        # force exactly new_tokens tokens in both loops: no EOS stop for HF, count tokens we produced
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = generate(lm, prompts, GenerationConfig(max_new_tokens=args.new_tokens))
            ours.append(out.new_tokens / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            with torch.no_grad():
                ref = lm.model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=args.new_tokens, do_sample=False,
                    pad_token_id=lm.tokenizer.pad_token_id,
                )
            produced = sum(
                len([t for t in row if t != lm.tokenizer.eos_token_id]) for row in ref[:, ids.shape[1]:].tolist()
            )
            hf.append(produced / (time.perf_counter() - t0))
        results[f"batch{batch}"] = {
            "ours_tok_s": statistics.median(ours),
            "hf_generate_tok_s": statistics.median(hf),
            "ratio": statistics.median(ours) / statistics.median(hf),
        }
    results["load"] = {"warm_s": time_load(cold=False)}
    if not args.skip_cold:
        results["load"]["cold_s"] = time_load(cold=True)
    results["cli"] = {"help_s": time_help()}

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print("| batch | ours tok/s | model.generate tok/s | ratio |")
    print("| --- | --- | --- | --- |")
    for b in (1, 8):
        r = results[f"batch{b}"]
        print(f"| {b} | {r['ours_tok_s']:.1f} | {r['hf_generate_tok_s']:.1f} | {r['ratio']:.3f} |")
    print(f"load: {results['load']}  |  lmcontrol --help: {results['cli']['help_s']:.3f} s")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    xs = range(2)
    ax.bar([x - 0.2 for x in xs], [results[f"batch{b}"]["ours_tok_s"] for b in (1, 8)], 0.4, label="lmcontrol loop")
    ax.bar([x + 0.2 for x in xs], [results[f"batch{b}"]["hf_generate_tok_s"] for b in (1, 8)], 0.4,
           label="model.generate")
    ax.set_xticks(list(xs), ["batch 1", "batch 8"])
    ax.set_ylabel("tokens / s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "throughput.png", dpi=120)


if __name__ == "__main__":
    main()
