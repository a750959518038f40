"""Tables and plots of the prefix benchmarks; the runs themselves are suites in the package.

    lmcontrol bench prefix --n 100 --out runs/bench-prefix/e2e-suite          # base, prefix, LoRA, full (E2E)
    lmcontrol bench prefix-throughput --n 8 --out runs/bench-prefix/throughput-suite
    lmcontrol compress --prompt-file src/lmcontrol/assets/prompts/pirate.txt --tokens 16 --out ...
    python benchmarks/prefix.py rules --prompt-files src/lmcontrol/assets/prompts/*.txt --max-new-tokens 48 --out ...
    python benchmarks/prefix.py compression --artifacts runs/bench-prefix/compressed/compressed-* --out ...
    python benchmarks/prefix.py report --out runs/bench-prefix

``report`` reads the suites' ``results.json`` (``--e2e`` / ``--throughput``; default the directories above),
the earlier per-run JSON under ``OUT/e2e/`` if present, ``compression.json`` and ``rules-*.json``, and writes
``summary.json`` and ``prefix.png``. E2E (Li & Liang 2021, table-to-text) settings are documented in
``lmcontrol.prefix.bench``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.prefix")


def _write(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def e2e_records(results: Path) -> list[dict[str, Any]]:
    """Per method of a ``bench prefix`` results.json: the old per-run record shape the report prints."""
    data = json.loads(results.read_text())
    training = data.get("training", {})
    out = []
    for name, vals in data["methods"].items():
        method, _, n = name.partition("-")
        t = training.get(name, {})
        trainable = t.get("trainable_parameters", 0)
        base = t.get("base_parameters") or 134_515_008
        out.append(
            {
                "method": name if not n.isdigit() else method,
                "examples": int(n) if n.isdigit() else 0,
                "steps": t.get("steps", 0),
                "bleu": vals["bleu"],
                "rouge_l": vals["rouge-l"],
                "trainable_parameters": trainable,
                "stored_share_percent": t.get("stored_share_percent", round(100 * trainable / base, 4)),
                "train_seconds": t.get("train_seconds", 0.0),
                "process_cpu_seconds": t.get("train_cpu_seconds", 0.0),
            }
        )
    return out


def throughput_summary(results: Path) -> dict[str, Any]:
    """tokens/s per mode of a ``bench prefix-throughput`` results.json, with the ratio to one prefix."""
    data = json.loads(results.read_text())
    names = {
        "mixed-8-prefixes": "mixed_8_prefixes",
        "single-prefix": "single_prefix",
        "separate-batch1": "separate_batch1",
    }
    res = {names[k]: {"tokens_per_second": round(v["tokens/s"], 2)} for k, v in data["methods"].items()}
    single = res["single_prefix"]["tokens_per_second"]
    for r in res.values():
        r["ratio_to_single_prefix"] = round(r["tokens_per_second"] / single, 3)
    return {"repeats": data["samples"], "max_new_tokens": data["generation"]["max_new_tokens"], "batch": 8, **res}


def run_rules(prompt_files: list[Path], out_file: Path, max_new_tokens: int) -> None:
    """Full-prompt outputs and rule pass rates of each example prompt (``prefix.bench.full_prompt_outputs``)."""
    from lmcontrol.models import load_lm
    from lmcontrol.prefix.bench import full_prompt_outputs

    lm = load_lm(None)
    res = json.loads(out_file.read_text()) if out_file.is_file() else {}
    for pf in prompt_files:
        if pf.stem in res:
            log.info("%s already in %s, skipping", pf.stem, out_file)
            continue
        res[pf.stem] = full_prompt_outputs(lm, pf, max_new_tokens)
        _write(out_file, res)


# ---------------------------------------------------------------------------------------------------------
# (3b) compression


def run_compression(artifacts: list[Path], out: Path) -> None:
    """Gather the evaluated compressed prompts (``lmcontrol compress`` evaluates on the held-out inputs)."""
    res = {}
    for d in artifacts:
        meta = json.loads((d / "config.json").read_text())
        res[meta["extra"]["prompt_name"]] = {"artifact": str(d), **meta["metrics"]}
    _write(out / "compression.json", res)


# ---------------------------------------------------------------------------------------------------------
# report


def report(out: Path, e2e_results: Path, throughput_results: Path) -> None:
    e2e = [json.loads(p.read_text()) for p in sorted((out / "e2e").glob("*.json"))]
    if e2e_results.is_file():
        e2e += e2e_records(e2e_results)
    summary: dict[str, Any] = {"e2e": [{k: v for k, v in r.items() if k != "outputs"} for r in e2e]}
    print("\n(1) E2E data-to-text, e2e:tokenized test subset")
    print(
        f"{'method':8} {'n':>5} {'steps':>5} {'BLEU':>6} {'ROUGE-L':>8} {'trainable':>11} {'stored %':>9} "
        f"{'train s':>8} {'cpu s':>7}"
    )
    for r in sorted(e2e, key=lambda r: (r["examples"], r["method"])):
        print(
            f"{r['method']:8} {r['examples']:>5} {r['steps']:>5} {r['bleu']:>6.2f} {r['rouge_l']:>8.4f} "
            f"{r['trainable_parameters']:>11,} {r['stored_share_percent']:>9.3f} {r['train_seconds']:>8.0f} "
            f"{r['process_cpu_seconds']:>7.0f}"
        )
    if throughput_results.is_file():
        _write(out / "throughput.json", throughput_summary(throughput_results))
    if (out / "throughput.json").is_file():
        thr = json.loads((out / "throughput.json").read_text())
        summary["throughput"] = thr
        print(
            f"\n(2) mixed-prefix throughput (batch 8, {thr['max_new_tokens']} new tokens, median of {thr['repeats']})"
        )
        for name in ("mixed_8_prefixes", "single_prefix", "separate_batch1"):
            print(f"{name:18} {thr[name]['tokens_per_second']:>8.1f} tok/s  x{thr[name]['ratio_to_single_prefix']:.2f}")
    if (out / "compression.json").is_file():
        comp = json.loads((out / "compression.json").read_text())
        summary["compression"] = comp
        print("\n(3) compression (10 held-out inputs each; pass = rule check; ROUGE-L vs full-prompt outputs)")
        print(
            f"{'prompt':14} {'P tok':>5} {'k':>3} {'ratio':>5} {'pass full/comp/none/trunc':>26} "
            f"{'RL comp/none/trunc':>20} {'TTFT P/k s':>13} {'KV P/k KiB':>12}"
        )
        for name, m in comp.items():
            passes = "/".join(
                f"{m.get('pass_' + c, float('nan')):.1f}" for c in ("full", "compressed", "none", "truncated")
            )
            rl = "/".join(f"{m['rouge_l_vs_full_' + c]:.2f}" for c in ("compressed", "none", "truncated"))
            print(
                f"{name:14} {m['prompt_tokens']:>5} {m['soft_tokens']:>3} {m['compression_ratio']:>5.1f} {passes:>26} "
                f"{rl:>20} {m['ttft_full_s']:>6.3f}/{m['ttft_compressed_s']:<6.3f} "
                f"{m['kv_cache_prompt_bytes_full'] // 1024:>6}/{m['kv_cache_prompt_bytes_compressed'] // 1024:<5}"
            )
    for rules in sorted(out.glob("rules-*.json")):
        summary.setdefault("rules", {})[rules.stem] = {
            n: {k: r[k] for k in ("prompt_file", "prompt_tokens", "max_new_tokens", "pass_rate")}
            for n, r in json.loads(rules.read_text()).items()
        }
    if "rules" in summary:
        print("\n(3a) full-prompt rule pass rate on all 30 user inputs (greedy, max new tokens as listed)")
        for label, recs in summary["rules"].items():
            for n, r in recs.items():
                print(f"{label:14} {n:14} {r['prompt_tokens']:>5} tok  pass {r['pass_rate']:.2f}  ({r['prompt_file']})")
    _write(out / "summary.json", summary)
    _plot(summary, out / "prefix.png")
    print(f"\nwrote {out / 'summary.json'} and {out / 'prefix.png'}")


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    methods = ["prefix", "lora", "full"]
    for j, n in enumerate((500, 2000)):
        vals = [
            next((r["bleu"] for r in summary["e2e"] if r["method"] == m and r["examples"] == n), 0) for m in methods
        ]
        axes[0].bar([i + 0.4 * j for i in range(3)], vals, width=0.4, label=f"{n} examples")
    axes[0].set_xticks([i + 0.2 for i in range(3)], methods)
    axes[0].set_ylabel("BLEU")
    axes[0].set_title("E2E (same steps)")
    axes[0].legend()
    if "throughput" in summary:
        names = ["mixed_8_prefixes", "single_prefix", "separate_batch1"]
        axes[1].bar(range(3), [summary["throughput"][n]["tokens_per_second"] for n in names])
        axes[1].set_xticks(range(3), ["8 prefixes", "1 prefix", "8 x batch 1"])
        axes[1].set_ylabel("tokens / s")
        axes[1].set_title("mixed-prefix throughput")
    if "compression" in summary:
        comp = summary["compression"]
        conds = ["full", "compressed", "none", "truncated"]
        for j, c in enumerate(conds):
            axes[2].bar(
                [i + 0.2 * j for i in range(len(comp))],
                [m.get(f"pass_{c}", 0) for m in comp.values()],
                width=0.2,
                label=c,
            )
        axes[2].set_xticks([i + 0.3 for i in range(len(comp))], list(comp))
        axes[2].set_ylabel("rule pass rate")
        axes[2].set_title("compression fidelity")
        axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    from lmcontrol.prefix.bench import rescore

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("part", choices=["rules", "rescore", "compression", "report"])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-prefix"))
    ap.add_argument("--e2e", type=Path, default=None, help="results.json of `lmcontrol bench prefix`")
    ap.add_argument("--throughput", type=Path, default=None, help="results.json of `bench prefix-throughput`")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--artifacts", type=Path, nargs="*", default=[])
    ap.add_argument("--prompt-files", type=Path, nargs="*", default=[], help="rules: prompts to measure")
    ap.add_argument("--label", default="current", help="rules / rescore: writes OUT/rules-LABEL.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.part == "rules":
        run_rules(args.prompt_files, args.out / f"rules-{args.label}.json", args.max_new_tokens)
    elif args.part == "rescore":
        path = args.out / f"rules-{args.label}.json"
        _write(path, rescore(json.loads(path.read_text())))
    elif args.part == "compression":
        run_compression(args.artifacts, args.out)
    report(
        args.out,
        args.e2e or args.out / "e2e-suite" / "results.json",
        args.throughput or args.out / "throughput-suite" / "results.json",
    )


if __name__ == "__main__":
    main()
