"""Diffusion-LM on E2E: loss and sample fluency at equal wall time, for model sizes and training options.

Each variant trains for the same wall-clock budget on one thread (its step count is its measured speed times the
budget, so every run has a full cosine schedule), then reports its validation loss and the judge perplexity of 64
unconstrained samples (100 ancestral steps, clamping) next to 64 human E2E references under the same judge.

    python benchmarks/diffusion_lm_sweep.py --minutes 6 --variant 128x4 --variant 256x6 --out runs/dlm-sweep
    python benchmarks/diffusion_lm_sweep.py --minutes 6 --variant 256x6+sc --variant 256x6+lin --out runs/dlm-sweep
    python benchmarks/diffusion_lm_sweep.py --evaluate runs/dlm/plain --evaluate runs/dlm/sc --samples 128

This script trains models, so it is not a bench suite; the comparison of *sampling* settings on the committed model
is the suite ``lmcontrol bench diffusion-lm-fluency``. ``--evaluate MODEL_DIR`` does the same for any trained model
directory (e.g. a sweep run) without registering it.

A variant is ``WIDTHxLAYERS`` plus optional ``+sc`` (self-conditioning), ``+lin`` (t ~ p(t) ∝ t + 1) and
``+vN`` (vocabulary min count N). Results append to ``OUT/sweep.jsonl``
(the committed 3-minute run: ``benchmarks/diffusion_lm_sweep_3min.jsonl``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import torch

from lmcontrol.diffusion_lm.bench import HUMAN_REFERENCES, JUDGE_PROMPT, judge_perplexity, judge_perplexity_se
from lmcontrol.diffusion_lm.config import DiffusionLMConfig, DiffusionTrainSettings, SampleSettings
from lmcontrol.diffusion_lm.losses import diffusion_lm_loss
from lmcontrol.diffusion_lm.model import DiffusionLM
from lmcontrol.diffusion_lm.pipeline import DiffusionLMPipeline
from lmcontrol.diffusion_lm.train import e2e_texts, encode_corpus, train_diffusion_lm
from lmcontrol.diffusion_lm.vocab import Vocab


def parse_variant(text: str) -> tuple[DiffusionLMConfig, DiffusionTrainSettings]:
    size, *flags = text.split("+")
    width, layers = (int(x) for x in size.split("x"))
    config = DiffusionLMConfig(width=width, layers=layers, heads=max(4, width // 64))
    settings = DiffusionTrainSettings(batch_size=64, lr=1e-3, warmup_steps=200, checkpoint_every=10**6, bf16=True)
    for flag in flags:
        if flag == "sc":
            config = dataclasses.replace(config, self_condition=True)
        elif flag == "lin":
            settings = dataclasses.replace(settings, t_sampling="linear")
        elif flag == "fp32":
            settings = dataclasses.replace(settings, bf16=False)
        elif flag.startswith("v"):
            settings = dataclasses.replace(settings, min_count=int(flag[1:]))
        else:
            raise SystemExit(f"unknown variant flag '{flag}' in '{text}'")
    return config, settings


def seconds_per_step(config: DiffusionLMConfig, settings: DiffusionTrainSettings, probe: int = 12) -> float:
    """Measured training speed (forward + backward + AdamW) on random E2E batches."""
    texts = e2e_texts("train")[:2000]
    vocab = Vocab.build(texts, 1)
    ids = encode_corpus(texts, vocab, config.seq_len)
    model = DiffusionLM(dataclasses.replace(config, vocab_size=len(vocab)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    times = []
    for _ in range(probe):
        batch = ids[torch.randint(0, len(ids), (settings.batch_size,), generator=g)]
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.bf16):
            loss = diffusion_lm_loss(model, batch, g, t_sampling=settings.t_sampling)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return sorted(times[2:])[len(times[2:]) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--evaluate", action="append", type=Path, default=[])
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--out", type=Path, default=Path("runs/dlm-sweep"))
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    from lmcontrol.models import load_lm

    judge = load_lm(None)
    for model_dir in args.evaluate:
        evaluate_model(model_dir, judge, args.samples, args.out)
    for text in args.variant:
        config, settings = parse_variant(text)
        spp = seconds_per_step(config, settings)
        steps = max(50, int(args.minutes * 60 / spp))
        settings = dataclasses.replace(settings, steps=steps, warmup_steps=min(200, steps // 10))
        run_dir = args.out / text
        t0 = time.perf_counter()
        metrics = train_diffusion_lm(config, settings, run_dir / "model", run_dir / "work")
        train_s = time.perf_counter() - t0
        pipe = DiffusionLMPipeline(DiffusionLM.load(run_dir / "model"))
        texts = []
        for seed in range(math.ceil(args.samples / 16)):
            texts += pipe(16, settings=SampleSettings(steps=100), seed=seed)
        texts = texts[: args.samples]
        row = {
            "variant": text,
            "parameters": metrics["parameters"],
            "seconds_per_step": round(spp, 3),
            "steps": steps,
            "train_seconds": round(train_s, 1),
            "valid_loss": round(metrics["valid_loss"], 4),
            "valid_mse": round(metrics["valid_mse"], 4),
            "judge_ppl": round(judge_perplexity(judge, None, JUDGE_PROMPT, texts), 1),
            "samples": texts[:6],
        }
        print(json.dumps(row), flush=True)
        with (args.out / "sweep.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")


def evaluate_model(model_dir: Path, judge, n: int, out: Path) -> None:  # noqa: ANN001
    """Judge perplexity (± bootstrap SE) of ``n`` unconstrained samples of one trained model, several settings."""
    from lmcontrol.data import load_dataset

    refs = [r["references"][0] for r in load_dataset("e2e:tokenized", split="valid")][:HUMAN_REFERENCES]
    human = judge_perplexity_se(judge, None, JUDGE_PROMPT, refs)
    pipe = DiffusionLMPipeline(DiffusionLM.load(model_dir))
    for settings in (SampleSettings(steps=100), SampleSettings(steps=200), SampleSettings(steps=100, mbr=4)):
        t0 = time.perf_counter()
        texts = []
        for seed in range(math.ceil(n / 16)):
            texts += pipe(16, settings=settings, seed=seed)
        ppl, se = judge_perplexity_se(judge, None, JUDGE_PROMPT, texts[:n])
        row = {
            "model": str(model_dir),
            "steps": settings.steps,
            "mbr": settings.mbr,
            "n": n,
            "judge_ppl": round(ppl, 1),
            "judge_ppl_se": round(se, 1),
            "human_ppl": round(human[0], 1),
            "human_ppl_se": round(human[1], 1),
            "ratio_to_human": round(ppl / human[0], 2),
            "sample_seconds": round(time.perf_counter() - t0, 1),
            "samples": texts[:8],
        }
        print(json.dumps(row), flush=True)
        with (out / "evaluate.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
