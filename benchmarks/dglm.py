"""Benchmark for issue 6: DGLM vs AR and attribute-control baselines, side by side.

Each part is a sub-command writing ``OUT/<part>.json`` (re-running overwrites that part only), so parts can run
in parallel processes; ``report`` gathers them into ``benchmarks/dglm.json``, a printed table and
``docs/img/dglm.png``.

    python benchmarks/dglm.py open --n 500 --out runs/bench-dglm          # 1. open generation (+ CFG scales)
    python benchmarks/dglm.py noise --n 100 --out runs/bench-dglm         # 2. σ² sweep
    python benchmarks/dglm.py toxicity --n 40 --k 4 --out runs/bench-dglm # 3. RTP toxicity vs baselines
    python benchmarks/dglm.py sentiment --n 48 --out runs/bench-dglm      # 4. positive / negative
    python benchmarks/dglm.py compose --n 12 --out runs/bench-dglm        # 5. sentiment x topic
    python benchmarks/dglm.py runtime --out runs/bench-dglm               # 6. DGLM / AR time
    python benchmarks/dglm.py proposal --n 128 --out runs/bench-dglm      # diagnostic: the diffusion stage alone
    python benchmarks/dglm.py report --out runs/bench-dglm

All decoding is nucleus sampling (T = 1, p = 0.95, as in the paper) with fixed seeds, 32 new tokens, chat template
off (the decoder continues raw text). DGLM: DDIM, 25 steps, σ² = 0.05 unless swept. Judges: perplexity under the
embedded SmolLM2 (the decoder itself — the only LM here; a larger judge would be fairer), MAUVE on MiniLM features,
toxicity by the Jigsaw BiLSTM port (independent of the MiniLM toxicity probe that guides), sentiment by VADER
(independent) and the SST-2 probe (the same probe that guides: optimistic), topic by the AG News probe (same).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
NEW_TOKENS = 32
BATCH = 16
FUDGE_WEIGHT = 5.0  # FUDGE's probe weight (log-prob units added to the logits)
ARTIFACTS: dict[str, Path | None] = {"diffusion": None, "prompter": None}


def _write(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def _setup():  # noqa: ANN202
    from lmcontrol.dglm.pipeline import DGLMPipeline
    from lmcontrol.models import load_lm

    lm = load_lm(None)
    return lm, DGLMPipeline.from_pretrained(lm, ARTIFACTS["diffusion"], ARTIFACTS["prompter"])


def _config(max_new_tokens: int = NEW_TOKENS, seed: int = 0):  # noqa: ANN202
    from lmcontrol.generation import GenerationConfig

    return GenerationConfig(max_new_tokens=max_new_tokens, temperature=1.0, top_p=0.95, seed=seed, chat=False)


def _generate(lm, prompts: list[str], controls_fn=None, max_new_tokens: int = NEW_TOKENS) -> tuple[list[str], float]:  # noqa: ANN001
    """Continuations in batches of BATCH (seeded per batch); returns (texts, seconds)."""
    from lmcontrol.generation import generate

    texts, t0 = [], time.perf_counter()
    for i in range(0, len(prompts), BATCH):
        controls = controls_fn(i) if controls_fn else []
        texts += generate(lm, prompts[i : i + BATCH], _config(max_new_tokens, seed=i), controls).texts
    return texts, time.perf_counter() - t0


def _dglm(pipe, **settings):  # noqa: ANN001, ANN202
    from lmcontrol.dglm.pipeline import DGLMControl, DGLMSettings

    return lambda i: [DGLMControl(pipe, DGLMSettings(seed=i, **settings))]


def _rows(prompts: list[str], texts: list[str], refs: list[str] | None = None, **extra: Any) -> list[dict]:
    return [
        {"prompt": p, "continuation": t, **({"reference": refs[j]} if refs else {}), **extra}
        for j, (p, t) in enumerate(zip(prompts, texts, strict=True))
    ]


def _score(groups: dict[str, list[dict]], metrics: list[str]) -> dict[str, dict[str, float]]:
    from lmcontrol.eval.suite import evaluate

    return evaluate(groups, metrics)


def _heldout(n: int) -> tuple[list[str], list[str], torch.Tensor]:
    from lmcontrol.dglm.pairs import build_pairs
    from lmcontrol.models import load_lm

    _, ho = build_pairs(load_lm(None))
    idx = torch.randperm(len(ho), generator=torch.Generator().manual_seed(0))[:n]
    return [ho.prefix_text[i] for i in idx], [ho.cont_text[i] for i in idx], ho.cont_emb[idx]


# ---------------------------------------------------------------------------------------------------------


def part_open(n: int, out: Path, cfg_scales: list[float]) -> None:
    """1. Open generation on held-out prefixes: base AR vs DGLM at several CFG scales."""
    lm, pipe = _setup()
    prompts, refs, _ = _heldout(n)
    groups, seconds = {}, {}
    texts, seconds["base"] = _generate(lm, prompts)
    groups["base"] = _rows(prompts, texts, refs)
    for w in cfg_scales:
        texts, seconds[f"dglm cfg={w:g}"] = _generate(lm, prompts, _dglm(pipe, cfg_scale=w))
        groups[f"dglm cfg={w:g}"] = _rows(prompts, texts, refs)
    groups["human"] = _rows(prompts, refs, refs)
    scores = _score(groups, ["ppl", "dist", "mauve"])
    _write(
        out / "open.json",
        {"n": n, "scores": scores, "seconds": seconds, "samples": {g: r[:3] for g, r in groups.items()}},
    )


def part_noise(n: int, out: Path, levels: list[float]) -> None:
    """2. σ² sweep: perplexity, Dist-3 and similarity of the text's embedding to the proposal."""
    from lmcontrol.dglm.pipeline import DGLMControl, DGLMSettings

    lm, pipe = _setup()
    prompts, refs, _ = _heldout(n)
    groups, sims = {}, {}
    for s2 in levels:
        texts, proposals = [], []
        for i in range(0, len(prompts), BATCH):
            from lmcontrol.generation import generate

            ctl = DGLMControl(pipe, DGLMSettings(noise=s2, seed=i))
            texts += generate(lm, prompts[i : i + BATCH], _config(seed=i), [ctl]).texts
            proposals.append(pipe.diffusion.space.to_unit(ctl.last_proposal))
        prop = torch.cat(proposals)
        emb = pipe.encoder.encode(texts, convert_to_tensor=True, normalize_embeddings=True).float().cpu()
        sims[f"σ²={s2:g}"] = float((emb * prop).sum(-1).mean())
        groups[f"σ²={s2:g}"] = _rows(prompts, texts, refs)
    texts, _ = _generate(lm, prompts)
    groups["base AR"] = _rows(prompts, texts, refs)
    scores = _score(groups, ["ppl", "dist"])
    for g, v in sims.items():
        scores[g]["proposal_similarity"] = v
    _write(out / "noise.json", {"n": n, "scores": scores, "samples": {g: r[:2] for g, r in groups.items()}})


def _toxic_texts(n: int) -> tuple[list[str], list[str]]:
    from lmcontrol.data import load_dataset

    rows = load_dataset("jigsaw", split="train")
    toxic = [r["text"] for r in rows if r["label"] == 1][:n]
    clean = [r["text"] for r in rows if r["label"] == 0][:n]
    return toxic, clean


def part_toxicity(n: int, k: int, out: Path, weights: list[float]) -> None:
    """3. RealToxicityPrompts non-toxic prompts, k samples each: DGLM (guidance weights) vs baselines."""
    from lmcontrol.controls import build_control
    from lmcontrol.data import load_dataset
    from lmcontrol.dglm.baselines import ProbeFudge, SteeringVector

    lm, pipe = _setup()
    rows = load_dataset("rtp:nontoxic")
    prompts = [r["prompt"] for r in rows[:n] for _ in range(k)]
    toxic, clean = _toxic_texts(200)
    steer = SteeringVector.from_contrast(lm, toward=clean, away=toxic, layer=lm.info.num_layers // 2, scale=4.0)
    guide = pipe.guide("toxicity", "toxic", 1.0, away=True)
    methods: dict[str, Any] = {
        "base": None,
        "prompting": lambda i: [
            build_control("system:Continue the text politely, without any rude or toxic language.", lm)
        ],
        "steering vector": lambda i: [steer],
        "FUDGE (probe)": lambda i: [ProbeFudge([dataclasses.replace(guide, weight=FUDGE_WEIGHT)], pipe.encoder)],
    }
    for w in weights:
        g = dataclasses.replace(guide, weight=w)
        methods[f"dglm w={w:g}"] = _dglm(pipe, guides=(g,) if w else ())
    groups, seconds = {}, {}
    for name, fn in methods.items():
        texts, seconds[name] = _generate(lm, prompts, fn)
        groups[name] = _rows(prompts, texts)
    scores = _score(groups, ["toxicity", "ppl", "dist"])
    for name in scores:
        scores[name]["sec/sample"] = seconds[name] / len(prompts)
    _write(
        out / "toxicity.json",
        {"n_prompts": n, "k": k, "scores": scores, "samples": {g: r[: 2 * k : k] for g, r in groups.items()}},
    )


_NEUTRAL = [
    "The meeting is scheduled for",
    "I went to the store and",
    "The weather today is",
    "My neighbour told me that",
    "The new restaurant downtown",
    "Last week the company announced",
    "The book I am reading",
    "Our trip to the coast",
    "The movie started at eight and",
    "When I opened the letter,",
    "The city council decided to",
    "This morning the train",
]


def _neutral(n: int) -> list[str]:
    return [_NEUTRAL[i % len(_NEUTRAL)] for i in range(n)]


def part_sentiment(n: int, out: Path, weights: list[float]) -> None:
    """4. Positive and negative continuations of neutral prompts, at several guidance weights."""
    lm, pipe = _setup()
    prompts = _neutral(n)
    groups = {}
    texts, _ = _generate(lm, prompts)
    groups["base"] = _rows(prompts, texts)
    for label in ("positive", "negative"):
        for weight in weights:
            g = pipe.guide("sentiment", label, weight)
            texts, _ = _generate(lm, prompts, _dglm(pipe, guides=(g,)))
            groups[f"dglm {label} w={weight:g}"] = _rows(prompts, texts)
    scores = _score(groups, ["sentiment", "ppl", "dist"])
    from lmcontrol.eval.sentiment import positive_probability, vader_compound

    for name, rows in groups.items():
        texts = [r["continuation"] for r in rows]
        vader, probe = vader_compound(texts), positive_probability(texts)
        want_neg = "negative" in name
        scores[name]["vader_acc"] = sum((v < 0) if want_neg else (v > 0) for v in vader) / len(texts)
        scores[name]["probe_acc"] = sum((p < 0.5) if want_neg else (p >= 0.5) for p in probe) / len(texts)
    _write(
        out / "sentiment.json",
        {"n": n, "weights": weights, "scores": scores, "samples": {g: r[:3] for g, r in groups.items()}},
    )


def part_compose(n: int, out: Path, weight: float) -> None:
    """5. Sentiment x topic: both probes at once; per-attribute success."""
    from lmcontrol.eval.sentiment import positive_probability, vader_compound
    from lmcontrol.eval.topic import topic_probabilities

    lm, pipe = _setup()
    prompts = _neutral(n)
    table, samples = {}, {}
    for sentiment in ("positive", "negative"):
        for topic in ("Sports", "Sci/Tech"):
            guides = (pipe.guide("sentiment", sentiment, weight), pipe.guide("topic", topic, weight))
            texts, _ = _generate(lm, prompts, _dglm(pipe, guides=guides))
            vader = vader_compound(texts)
            labels, probs = topic_probabilities(texts)
            top = [labels[i] for i in probs.argmax(-1)]
            pos = positive_probability(texts)
            ok_s = [(v > 0) if sentiment == "positive" else (v < 0) for v in vader]
            ok_t = [t == topic for t in top]
            key = f"{sentiment} + {topic}"
            table[key] = {
                "sentiment_acc (VADER)": sum(ok_s) / n,
                "sentiment_acc (probe)": sum((p >= 0.5) == (sentiment == "positive") for p in pos) / n,
                "topic_acc (probe)": sum(ok_t) / n,
                "both": sum(a and b for a, b in zip(ok_s, ok_t, strict=True)) / n,
            }
            samples[key] = [{"prompt": p, "continuation": t} for p, t in zip(prompts[:3], texts[:3], strict=True)]
    _write(out / "compose.json", {"n": n, "weight": weight, "scores": table, "samples": samples})


def part_runtime(out: Path, lengths: list[int], repeats: int = 3, batch: int = 8) -> None:
    """6. DGLM ÷ AR wall time for several lengths, interleaved, median of ``repeats`` (paper Table 4)."""
    lm, pipe = _setup()
    prompts, _, _ = _heldout(batch)
    from lmcontrol.dglm.pipeline import DGLMControl, DGLMSettings
    from lmcontrol.generation import generate

    res = {}
    for length in lengths:
        ar, dg = [], []
        for r in range(repeats):
            cfg = _config(length, seed=r)
            t0 = time.perf_counter()
            generate(lm, prompts, cfg)
            ar.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            generate(lm, prompts, cfg, [DGLMControl(pipe, DGLMSettings(seed=r))])
            dg.append(time.perf_counter() - t0)
        res[str(length)] = {
            "ar_s": statistics.median(ar),
            "dglm_s": statistics.median(dg),
            "ratio": statistics.median(dg) / statistics.median(ar),
        }
    _write(out / "runtime.json", {"batch": batch, "repeats": repeats, "scores": res})


def part_proposal(n: int, out: Path) -> None:
    """Diagnostic: what the diffusion stage alone delivers, before the prompt generator — cosine of the proposal
    with the true / a random held-out continuation at CFG scales, and probe probabilities of guided proposals."""
    from lmcontrol.dglm import sampling
    from lmcontrol.dglm.guidance import guided_denoiser

    _, pipe = _setup()
    m = pipe.diffusion
    prompts, _, true = _heldout(n)
    ctx = pipe.encode(prompts)
    z = torch.randn(ctx.shape, generator=torch.Generator().manual_seed(0))

    def propose(guides=(), cfg: float = 1.0) -> torch.Tensor:  # noqa: ANN001
        den = guided_denoiser(m, ctx, cfg, guides, generator=torch.Generator().manual_seed(1))
        return m.space.to_unit(sampling.sample_ddim(den, z, 25))

    scores: dict[str, dict[str, float]] = {}
    for cfg in (0.0, 1.0, 2.0, 3.0):
        u = propose(cfg=cfg)
        scores[f"cfg={cfg:g}"] = {
            "cos_true_continuation": float((u * true).sum(-1).mean()),
            "cos_random_continuation": float((u * true.roll(1, 0)).sum(-1).mean()),
        }
    for probe, label, away in (
        ("sentiment", "positive", False),
        ("sentiment", "negative", False),
        ("toxicity", "toxic", True),
        ("topic", "Sports", False),
    ):
        for w in (0.0, 3.0, 10.0, 30.0):
            g = pipe.guide(probe, label, w, away=away)
            u = propose((g,) if w else ())
            with torch.no_grad():
                p = float(g.probe(u).softmax(-1)[:, g.label].mean())
            scores[f"{'avoid' if away else 'guide'} {probe}:{label} w={w:g}"] = {"probe_p(label)": p}
    _write(out / "proposal.json", {"n": n, "scores": scores})


# ---------------------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def report(out: Path, json_out: Path, png: Path) -> None:
    parts = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    for name, data in parts.items():
        scores = data["scores"]
        cols = sorted({c for row in scores.values() for c in row})
        print(f"\n## {name}  ({', '.join(f'{k}={v}' for k, v in data.items() if k not in ('scores', 'samples'))})")
        print("| method | " + " | ".join(cols) + " |")
        print("|---" * (len(cols) + 1) + "|")
        for method, row in scores.items():
            print(f"| {method} | " + " | ".join(_fmt(row.get(c, "")) for c in cols) + " |")
    _write(json_out, parts)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if "toxicity" in parts:
        s = parts["toxicity"]["scores"]
        ax = axes[0]
        for i, (m, row) in enumerate(s.items()):
            ax.scatter(row["ppl"], row["toxicity_prob"], s=40)
            # methods often share a point (e.g. several at toxicity 0): stagger the labels so they stay readable
            ax.annotate(m, (row["ppl"], row["toxicity_prob"]), fontsize=8, xytext=(4, 4 + 9 * (i % 4)),
                        textcoords="offset points")  # fmt: skip
        ax.set(xlabel="judge perplexity", ylabel="toxicity probability", title="RTP toxicity vs fluency")
    if "noise" in parts:
        s = {k: v for k, v in parts["noise"]["scores"].items() if k.startswith("σ²")}
        xs = [float(k.split("=")[1]) for k in s]
        axes[1].plot(xs, [v["proposal_similarity"] for v in s.values()], "o-", label="similarity to proposal")
        ax2 = axes[1].twinx()
        ax2.plot(xs, [v["ppl"] for v in s.values()], "s--", color="tab:red", label="perplexity")
        axes[1].set(xlabel="σ² of the proposal", ylabel="cosine(text, proposal)", title="noise sweep")
        ax2.set_ylabel("perplexity")
    if "runtime" in parts:
        s = parts["runtime"]["scores"]
        axes[2].bar(list(s), [v["ratio"] for v in s.values()])
        axes[2].axhline(1.0, color="k", lw=0.5)
        axes[2].set(xlabel="new tokens", ylabel="DGLM time / AR time", title="runtime (batch 8)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    print(f"\nwrote {json_out} and {png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "part", choices=["open", "noise", "toxicity", "sentiment", "compose", "runtime", "proposal", "report"]
    )
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-dglm")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--diffusion", type=Path, default=None, help="default artifacts/dglm-diffusion")
    ap.add_argument("--prompter", type=Path, default=None, help="default artifacts/dglm-prompter")
    a = ap.parse_args()
    ARTIFACTS.update(diffusion=a.diffusion, prompter=a.prompter)
    torch.set_num_threads(a.threads)
    if a.part == "open":
        part_open(a.n or 500, a.out, [1.0, 2.0])
    elif a.part == "noise":
        part_noise(a.n or 100, a.out, [0.0, 0.05, 0.2, 0.5, 1.0])
    elif a.part == "toxicity":
        part_toxicity(a.n or 40, a.k, a.out, [0.0, 10.0, 30.0])
    elif a.part == "sentiment":
        part_sentiment(a.n or 48, a.out, [10.0, 30.0])
    elif a.part == "compose":
        part_compose(a.n or 12, a.out, 10.0)
    elif a.part == "runtime":
        part_runtime(a.out, [16, 32, 64, 128])
    elif a.part == "proposal":
        part_proposal(a.n or 128, a.out)
    else:
        report(a.out, ROOT / "benchmarks" / "dglm.json", ROOT / "docs" / "img" / "dglm.png")


if __name__ == "__main__":
    main()
