"""Prompt compression: distil a long prompt P into k soft key/value tokens (gisting, Mu et al. 2023).

The teacher is the frozen model with P as its system message; the student is the same model with k learned
KV tokens in place of P (and no system message). For a varied set of user inputs x we sample the teacher's own
responses y once (one greedy + some at temperature 0.7), cache the teacher's top-k next-token distributions
along y, and train the k tokens to minimise

    KL( p(. | P, x, y<t) || p(. | soft, x, y<t) )   summed over response positions t

(the teacher's top-k renormalised; the constant teacher entropy is dropped from the loss). Unlike gisting we do
not fine-tune the LM to *produce* gist tokens for any prompt: each prompt gets its own optimised prefix, which is
what a 135M model on a CPU can afford, and what a prefix library can then serve alongside other prefixes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmcontrol import LMControlError
from lmcontrol.controls import SoftPrompt
from lmcontrol.generation import GenerationConfig, generate
from lmcontrol.prefix.config import CompressConfig
from lmcontrol.prefix.model import CompressedPrompt, config_for, words_kv
from lmcontrol.scoring import collate, encode, target_logits
from lmcontrol.training import TrainConfig, step_generator, train_loop

if TYPE_CHECKING:
    from lmcontrol.models import LanguageModel

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "assets" / "prompts"
TEACHER_BATCH = 10  # responses per teacher forward


@dataclasses.dataclass
class PromptSpec:
    """A long prompt with its user inputs and (optionally) a regex rule its outputs should satisfy."""

    name: str
    text: str
    train: list[str]
    heldout: list[str]
    rule: dict[str, str] | None = None

    def passes(self, output: str) -> bool:
        if self.rule is None:
            raise LMControlError(f"prompt '{self.name}' has no rule check")
        return re.search(self.rule["pattern"], output.strip()) is not None

    def demonstrations(self) -> list[tuple[str, str]]:
        """(user, assistant) pairs written in P as earlier ChatML turns (how the example prompts demonstrate)."""
        turn = r"<\|im_start\|>user\n(.*?)<\|im_end\|>\n<\|im_start\|>assistant\n(.*?)(?:<\|im_end\|>|$)"
        return [(u.strip(), a.strip()) for u, a in re.findall(turn, self.text, flags=re.S)]


def load_prompt_spec(prompt_file: str | Path, inputs: str | Path | None = None) -> PromptSpec:
    """Read P and its inputs (``inputs`` JSON, default ``<prompt>.json`` beside it: {train, heldout, rule})."""
    path = Path(prompt_file)
    if not path.is_file():
        raise LMControlError(f"prompt file not found: {path}")
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise LMControlError(f"prompt file {path} is empty")
    spec_path = Path(inputs) if inputs is not None else path.with_suffix(".json")
    if not spec_path.is_file():
        raise LMControlError(f"no user inputs for {path}: give --inputs FILE.json with a 'train' list")
    try:
        raw = json.loads(spec_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LMControlError(f"{spec_path} is not valid JSON ({e})") from None
    train = [str(x) for x in raw.get("train", []) if str(x).strip()]
    if not train:
        raise LMControlError(f"{spec_path} has no 'train' user inputs")
    return PromptSpec(path.stem, text, train, [str(x) for x in raw.get("heldout", [])], raw.get("rule"))


def example_prompt(name: str) -> PromptSpec:
    """One of the shipped example prompts (``sunny``, ``answer_format``, ``pirate``)."""
    return load_prompt_spec(PROMPTS_DIR / f"{name}.txt")


# ---------------------------------------------------------------------------------------------------------
# teacher data


@torch.no_grad()
def teacher_examples(
    lm: LanguageModel, spec: PromptSpec, cfg: CompressConfig
) -> tuple[list[dict[str, Any]], list[str]]:
    """Teacher responses to every training input, and the teacher's top-k log-probs along each response.

    Returns per example: ``prompt_ids`` (the student's prompt, without P), ``target_ids`` (the response),
    ``topk_idx`` / ``topk_logp`` (R, K) for its R tokens; and the greedy teacher texts (the full prompt's outputs).
    """
    tok, eos = lm.tokenizer, int(lm.tokenizer.eos_token_id)
    special = not (cfg.chat and lm.has_chat_template)
    responses: list[tuple[str, list[int]]] = []
    greedy: list[str] = []
    for s in range(cfg.samples_per_input):
        gen_cfg = GenerationConfig(
            max_new_tokens=cfg.max_new_tokens,
            temperature=0.0 if s == 0 else cfg.temperature,
            seed=cfg.seed + s,
            chat=cfg.chat,
            system=spec.text,
        )
        for i in range(0, len(spec.train), 10):
            out = generate(lm, spec.train[i : i + 10], gen_cfg)
            greedy += out.texts if s == 0 else []
            for x, ids in zip(out.prompts, out.token_ids, strict=True):
                responses.append((x, ids + ([eos] if len(ids) < cfg.max_new_tokens else [])))
    responses = [(x, y) for x, y in responses if y]
    examples = []
    for i in range(0, len(responses), TEACHER_BATCH):
        xs, ys = zip(*responses[i : i + TEACHER_BATCH], strict=True)
        batch = encode(lm, xs, ys, chat=cfg.chat, system=spec.text)  # the teacher: P as the system message
        logp = target_logits(lm, batch).log_softmax(-1)  # (N, V), row-major over the responses
        top = logp.topk(cfg.top_k, dim=-1)
        for x, y, idx, val in zip(xs, ys, top.indices.split(batch.num_tokens.tolist()),
                                  top.values.split(batch.num_tokens.tolist()), strict=True):
            s_ids = tok(lm.format_prompt(x, chat=cfg.chat), add_special_tokens=special)["input_ids"]
            examples.append({"prompt_ids": s_ids, "target_ids": y, "topk_idx": idx, "topk_logp": val})
    return examples, greedy


def distill_loss(lm: LanguageModel, prompt: CompressedPrompt, examples: list[dict[str, Any]]) -> torch.Tensor:
    """Mean over response tokens of the cross-entropy from the teacher's top-k distribution to the student."""
    batch = collate(
        [e["prompt_ids"] for e in examples], [e["target_ids"] for e in examples], int(lm.tokenizer.pad_token_id)
    )
    soft = SoftPrompt.from_kv(prompt.kv_tensor(), batch=len(examples))
    logp_s = target_logits(lm, batch, [soft]).log_softmax(-1)  # (N, V), rows in example order
    idx = torch.cat([e["topk_idx"] for e in examples])  # (N, K)
    p_t = torch.cat([e["topk_logp"] for e in examples]).softmax(-1)  # (N, K) renormalised top-k
    return -(p_t * logp_s.gather(1, idx.to(logp_s.device))).sum(-1).mean()


def compress_prompt(
    lm: LanguageModel, spec: PromptSpec, cfg: CompressConfig, out: str | Path, *, resume: bool = False
) -> tuple[CompressedPrompt, dict[str, Any]]:
    """Distil ``spec.text`` into ``cfg.tokens`` KV tokens; saves the artifact to ``out``."""
    p_tokens = len(lm.tokenizer(spec.text, add_special_tokens=False)["input_ids"])
    if cfg.tokens >= p_tokens:
        raise LMControlError(f"--tokens {cfg.tokens} is not fewer than the prompt's {p_tokens} tokens")
    torch.manual_seed(cfg.seed)
    examples, greedy = teacher_examples(lm, spec, cfg)
    log.info("compress %s: %d teacher responses", spec.name, len(examples))
    pcfg = config_for(
        lm, length=cfg.tokens, reparam_hidden=0, init="words", init_text=spec.text, template="{input}", chat=cfg.chat
    )
    prompt = CompressedPrompt(pcfg)
    prompt.base_model, prompt.base_hidden_size = lm.info.name, lm.info.hidden_size
    with torch.no_grad():  # start from the model's own KV of P's first k tokens
        prompt.kv.copy_(words_kv(lm, spec.text, cfg.tokens))

    def batch_fn(step: int, rank: int, world: int) -> list[dict[str, Any]]:
        g = step_generator(cfg.seed, step, rank)
        return [examples[int(i)] for i in torch.randint(len(examples), (cfg.batch_size,), generator=g)]

    train_cfg = TrainConfig(
        steps=cfg.steps,
        lr=cfg.lr,
        seed=cfg.seed,
        warmup_steps=min(10, cfg.steps // 10),
        checkpoint_every=25,
        log_every=max(1, min(25, cfg.steps)),
        grad_clip=1.0,
    )
    result = train_loop(
        prompt,
        lambda m, b: distill_loss(lm, m, b),
        batch_fn,
        train_cfg,
        out,
        resume=resume,
        description=f"compress {spec.name}",
    )
    prompt.eval().requires_grad_(False)
    metrics: dict[str, Any] = {
        "prompt_tokens": p_tokens,
        "soft_tokens": cfg.tokens,
        "compression_ratio": round(p_tokens / cfg.tokens, 1),
        "distill_loss_final": round(result.final_loss, 4),
        "train_seconds": round(result.seconds, 1),
        "teacher_responses": len(examples),
    }
    if spec.rule is not None:  # how well the full prompt itself follows its rule, on the training inputs
        metrics["teacher_pass_rate_train"] = round(sum(spec.passes(t) for t in greedy) / len(greedy), 3)
    return prompt, metrics


# ---------------------------------------------------------------------------------------------------------
# evaluation: fidelity, rule pass rate, time to first token, KV-cache size


def kv_bytes(lm: LanguageModel, tokens: int, bytes_per_value: int = 4) -> int:
    """KV-cache size of ``tokens`` positions: layers x (K, V) x kv heads x head dim x dtype bytes."""
    info = lm.info
    return tokens * info.num_layers * 2 * info.num_kv_heads * info.head_dim * bytes_per_value


def evaluate_compression(
    lm: LanguageModel,
    spec: PromptSpec,
    prompt: CompressedPrompt,
    inputs: list[str],
    max_new_tokens: int = 48,
    ttft_repeats: int = 3,
) -> dict[str, Any]:
    """Held-out fidelity of the k soft tokens against the full prompt, no prompt and P cut to k tokens."""
    from lmcontrol.eval.text_metrics import rouge_l
    from lmcontrol.prefix.control import PrefixLibrary

    control = PrefixLibrary({spec.name: prompt}, default=spec.name, per_row=False)
    k = prompt.config.length
    cut_ids = lm.tokenizer(spec.text, add_special_tokens=False)["input_ids"][:k]
    conditions: dict[str, tuple[str | None, list[Any]]] = {
        "full": (spec.text, []),
        "compressed": (None, [control]),
        "none": (None, []),
        "truncated": (lm.tokenizer.decode(cut_ids), []),
    }
    outputs: dict[str, list[str]] = {}
    for name, (system, controls) in conditions.items():
        cfg = GenerationConfig(max_new_tokens=max_new_tokens, system=system)
        outputs[name] = [
            o for i in range(0, len(inputs), 10) for o in generate(lm, inputs[i : i + 10], cfg, controls).texts
        ]
    res: dict[str, Any] = {"outputs": outputs}
    for name in conditions:
        if spec.rule is not None:
            res[f"pass_{name}"] = sum(spec.passes(o) for o in outputs[name]) / len(inputs)
        if name != "full":
            res[f"rouge_l_vs_full_{name}"] = round(rouge_l(outputs[name], outputs["full"]), 4)
    # time to first token on one prompt (batch 1), conditions interleaved, median of the repeats
    ttft: dict[str, list[float]] = {"full": [], "compressed": []}
    for _ in range(ttft_repeats):
        for name in ttft:
            system, controls = conditions[name]
            out = generate(lm, inputs[:1], GenerationConfig(max_new_tokens=1, system=system), controls)
            ttft[name].append(out.first_token_seconds)
    res["ttft_full_s"] = round(statistics.median(ttft["full"]), 4)
    res["ttft_compressed_s"] = round(statistics.median(ttft["compressed"]), 4)
    res["ttft_speedup"] = round(res["ttft_full_s"] / max(res["ttft_compressed_s"], 1e-9), 2)
    p_tokens = len(lm.tokenizer(spec.text, add_special_tokens=False)["input_ids"])
    res["kv_cache_prompt_bytes_full"] = kv_bytes(lm, p_tokens)
    res["kv_cache_prompt_bytes_compressed"] = kv_bytes(lm, k)
    return res


def run_compress_command(
    cfg: CompressConfig,
    *,
    prompt_file: Path,
    out: Path,
    inputs: Path | None,
    model: str | None,
    resume: bool,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Body of ``lmcontrol compress`` (arguments documented on the CLI)."""
    from lmcontrol.models import load_lm

    spec = load_prompt_spec(prompt_file, inputs)
    lm = load_lm(model)
    prompt, metrics = compress_prompt(lm, spec, cfg, out, resume=resume)
    if evaluate and spec.heldout:
        res = evaluate_compression(lm, spec, prompt, spec.heldout)
        metrics.update({k: v for k, v in res.items() if k != "outputs"})
    prompt.save_pretrained(
        out,
        data=f"{len(spec.train)} user inputs x {cfg.samples_per_input} teacher responses ({prompt_file})",
        metrics=metrics,
        extra={"compress_config": dataclasses.asdict(cfg), "prompt_name": spec.name},
        description=f"The prompt '{spec.name}' ({metrics['prompt_tokens']} tokens) distilled into {cfg.tokens} soft "
        "key/value tokens (gisting-style KL distillation, Mu et al. 2023). Use: --control compressed:DIR",
    )
    return metrics
