"""Prefix-tuning trainer (Li & Liang 2021): next-token cross-entropy on the target only, the LM frozen.

    lmcontrol train prefix --data e2e --examples 2000 --length 10 --steps 150 --out artifacts/prefix-e2e

An example becomes ``template(input) + target + EOS``; the loss covers the target tokens and the EOS. The E2E
default feeds the PrefixTuning table string (``name : The Vaults | Type : pub | ...``) followed by a newline,
with the chat template off (the prefix, not an instruction, carries the task; it also keeps examples short).
Such a prefix sets ``chat=False`` on its control, so generation turns the template off by itself. Training
runs through ``scoring.target_loss`` (the decoding loop's ``build_prefill`` layout), so a trained prefix
sees at test time exactly what it saw in training.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmcontrol import LMControlError
from lmcontrol.controls import Control, SoftPrompt
from lmcontrol.prefix.config import PrefixConfig, PrefixRun
from lmcontrol.prefix.control import PrefixLibrary
from lmcontrol.prefix.model import Prefix, with_geometry
from lmcontrol.scoring import TargetBatch, collate, target_loss, target_token_ids
from lmcontrol.training import TrainConfig, step_generator, train_loop

if TYPE_CHECKING:
    from lmcontrol.models import LanguageModel

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------
# data


def load_pairs(
    data: str, input_field: str, target_field: str, examples: int | None, seed: int = 0, split: str = "train"
) -> tuple[list[str], list[str]]:
    """``examples`` (input, target) pairs drawn without replacement (seeded) from any data spec."""
    from lmcontrol.data import get_field, load_dataset

    rows = load_dataset(data, split=split)
    inputs, targets = get_field(rows, input_field, data), get_field(rows, target_field, data)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    order = order[: examples or len(order)]
    pairs = [(str(inputs[i]), str(targets[i])) for i in order if str(inputs[i]).strip() and str(targets[i]).strip()]
    if not pairs:
        raise LMControlError(f"data set '{data}' has no non-empty ({input_field}, {target_field}) pairs")
    return [p[0] for p in pairs], [p[1] for p in pairs]


def prompt_text(lm: LanguageModel, template: str, chat: bool, x: str) -> str:
    """The exact text the model sees for input ``x`` (generate with ``chat`` set the same way)."""
    return lm.format_prompt(template.replace("{input}", x), chat=chat)


def encode_pairs(
    lm: LanguageModel, prompts: Sequence[str], targets: Sequence[str], chat: bool, max_length: int = 128
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids + EOS) per example, prompt + target cut to ``max_length`` tokens."""
    tok = lm.tokenizer
    special = not (chat and lm.has_chat_template)  # as generation.tokenize_prompts does
    out = []
    for p, t in zip(prompts, targets, strict=True):
        p_ids = tok(p, add_special_tokens=special)["input_ids"]
        t_ids = target_token_ids(lm, t, append_eos=True)[: max(0, max_length - len(p_ids))]
        if t_ids:
            out.append((p_ids, t_ids))
    if not out:
        raise LMControlError(f"every example's prompt is longer than max_length={max_length}")
    return out


def epoch_batch_fn(encoded: Sequence[tuple[list[int], list[int]]], batch_size: int, seed: int, pad_id: int):
    """``batch_fn(step, rank, world)`` walking seeded per-epoch permutations (pure in step -> exact resume)."""
    n = len(encoded)

    def batch_fn(step: int, rank: int, world: int) -> TargetBatch:
        idx = []
        for j in range(batch_size):
            pos = (step * world + rank) * batch_size + j
            perm = torch.randperm(n, generator=step_generator(seed, pos // n, 0))
            idx.append(int(perm[pos % n]))
        return collate([encoded[i][0] for i in idx], [encoded[i][1] for i in idx], pad_id)

    return batch_fn


def prefix_loss(lm: LanguageModel, prefix: Prefix, batch: TargetBatch) -> torch.Tensor:
    """Mean next-token cross-entropy of the targets behind the prefix (Li & Liang 2021, eq. 2)."""
    return target_loss(lm, batch, [SoftPrompt.from_kv(prefix.kv_tensor(), batch=batch.input_ids.shape[0])])


# ---------------------------------------------------------------------------------------------------------
# training + evaluation


def train_prefix(
    lm: LanguageModel,
    prefix_config: PrefixConfig,
    train_config: TrainConfig,
    run: PrefixRun,
    out: str | Path,
    *,
    resume: bool = False,
) -> tuple[Prefix, dict[str, Any]]:
    """Train a prefix, merge it, evaluate it (if ``run.eval_data``) and save the artifact to ``out``."""
    torch.manual_seed(train_config.seed)
    inputs, targets = load_pairs(run.data, run.input_field, run.target_field, run.examples, train_config.seed)
    prompts = [prompt_text(lm, prefix_config.template, prefix_config.chat, x) for x in inputs]
    encoded = encode_pairs(lm, prompts, targets, prefix_config.chat, run.max_length)
    prefix = Prefix.create(lm, prefix_config)
    counts = prefix.parameter_counts(lm)
    log.info(
        "prefix: %d trainable parameters (%.3f%% of the base model)",
        counts["trainable_parameters"],
        counts["trainable_share_percent"],
    )

    def loss_fn(module: Prefix, batch: TargetBatch) -> torch.Tensor:
        return prefix_loss(lm, module, batch)

    batch_fn = epoch_batch_fn(encoded, run.batch_size, train_config.seed, int(lm.tokenizer.pad_token_id))
    cpu0 = time.process_time()
    result = train_loop(prefix, loss_fn, batch_fn, train_config, out, resume=resume, description="prefix")
    cpu_seconds = time.process_time() - cpu0
    merged = prefix.merge()
    metrics: dict[str, Any] = {
        "train_loss_final": result.final_loss,
        "train_seconds": round(result.seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),  # process CPU time: less sensitive to other jobs than wall
        "steps": result.steps,
        "examples": len(encoded),
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in counts.items()},
        "stored_share_percent": round(100.0 * merged.config.kv_numel / counts["base_parameters"], 4),
    }
    if run.eval_data:
        scores = evaluate_e2e_style(lm, run, prefix_config, [merged_control(merged)])
        metrics.update({k: v for k, v in scores.items() if k != "outputs"})
    merged.save_pretrained(
        out,
        data=f"{run.data} ({run.input_field} -> {run.target_field}), {len(encoded)} examples",
        metrics=metrics,
        extra={"losses": [round(x, 4) for x in result.losses], "resumed_from": result.resumed_from},
    )
    return merged, metrics


def merged_control(prefix: Prefix) -> Control:
    return PrefixLibrary({"prefix": prefix}, default="prefix", per_row=False)


def evaluate_e2e_style(
    lm: LanguageModel, run: PrefixRun, prefix_config: PrefixConfig, controls: Sequence[Control], n: int | None = None
) -> dict[str, Any]:
    """Greedy outputs on ``run.eval_data`` and multi-reference BLEU (sacrebleu) + ROUGE-L against its
    ``references`` field (or the target field)."""
    from lmcontrol.data import get_field, load_dataset
    from lmcontrol.eval.text_metrics import corpus_bleu, rouge_l
    from lmcontrol.generation import GenerationConfig, generate

    assert run.eval_data is not None
    rows = load_dataset(run.eval_data, split=run.eval_split)
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    rows = [rows[i] for i in order[: n or run.eval_n]]
    inputs = get_field(rows, run.input_field, run.eval_data)
    ref_field = "references" if "references" in rows[0] else run.target_field
    refs = get_field(rows, ref_field, run.eval_data)
    prompts = [prefix_config.template.replace("{input}", str(x)) for x in inputs]
    cfg = GenerationConfig(max_new_tokens=run.max_new_tokens, chat=prefix_config.chat)
    t0, outputs = time.perf_counter(), []
    for i in range(0, len(prompts), 32):
        outputs += generate(lm, prompts[i : i + 32], cfg, controls).texts
    outputs = [o.strip() for o in outputs]
    return {
        "bleu": round(corpus_bleu(outputs, refs), 2),
        "rouge_l": round(rouge_l(outputs, refs), 4),
        "eval_mrs": len(rows),
        "eval_seconds": round(time.perf_counter() - t0, 1),
        "outputs": outputs,
    }


def run_train_command(
    prefix_config: PrefixConfig,
    train_config: TrainConfig,
    run: PrefixRun,
    *,
    model: str | None,
    out: Path,
    resume: bool,
) -> dict[str, Any]:
    """Body of ``lmcontrol train prefix``: fills the model's geometry, the E2E evaluation default and the
    warm-up / logging intervals, then trains."""
    from lmcontrol.models import load_lm

    if run.eval_data is None and run.data.strip().lower() == "e2e":
        # the test split in the same (PTB) tokenization as the e2e train targets
        run = dataclasses.replace(run, eval_data="e2e:tokenized")
    if run.eval_n == 0:
        run = dataclasses.replace(run, eval_data=None)
    steps = train_config.steps
    train_config = dataclasses.replace(
        train_config, warmup_steps=min(10, steps // 10), log_every=max(1, min(25, steps))
    )
    # fail on a missing field before the model does any work
    load_pairs(run.data, run.input_field, run.target_field, 1, train_config.seed)
    lm = load_lm(model)
    prefix_config = with_geometry(prefix_config, lm)
    _, metrics = train_prefix(lm, prefix_config, train_config, run, out, resume=resume)
    return metrics
