"""Training the investigator: SFT on reversed forward pairs, then the variational objective in Frank-Wolfe rounds.

Paper (Li et al. 2025), with q = q_phi(x | y), p = the target, p_prior = the base LM on the prompt alone:

    max_q  E_{y} E_{x ~ q(.|y)} [ log p(y | x) ] + beta1 * H(q) - beta2 * CE(q, p_prior)          (eq. 2)

Frank-Wolfe (eq. 4-5): round i trains a fresh copy q_i of the SFT model on the linearised objective

    r_i(x) = log p(y | x) - beta1 * log qbar_{i-1}(x | y) + beta2 * log p_prior(x),
    qbar_i = sum_{j <= i} eta_j q_j  (eta uniform),

so prompts that earlier rounds already produce are penalised and each round moves to a new mode. Round 1 uses
q_1 itself for qbar_0, which is the plain entropy bonus. Each round is optimised with REINFORCE and a
leave-one-out baseline over the samples of one behaviour (``objective="reinforce"``), DPO on the best /
worst sample of each behaviour against the SFT model (``objective="dpo"``), or reward-ranked fine-tuning
(``objective="best"``: maximise log q of each behaviour's highest-r_i sample — RAFT, Dong et al. 2023; ReST's
improve step, Gulcehre et al. 2023), which keeps the policy on prompts it already writes well, or ``objective=
"success"``: the same, but only over samples the target *verifiably* answers with y (its greedy reply begins with
y's first words — rejection-sampling fine-tuning / expert iteration, as in STaR, Zelikman et al. 2022); r_i ranks the
successes, so the Frank-Wolfe repulsion still picks, among the working prompts, the one earlier rounds write least.
A behaviour with no success in a step contributes nothing. TRL's trainers need
their own generation stack and datasets, so the ~30 lines below do it on lmcontrol's generation and scoring.

Every phase runs in ``lmcontrol.training.train_loop`` (AdamW, checkpoints without pickle, exact resume); only
the LoRA parameters of the phase's adapter are trained. Progress is kept in ``<out>/checkpoint/``: the forward
pairs (``sft_pairs.jsonl``), one finished adapter per phase (``<phase>.safetensors``) and ``phases.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmcontrol import LMControlError
from lmcontrol.controls import Control
from lmcontrol.models import LanguageModel
from lmcontrol.redteam.behaviors import Behavior
from lmcontrol.redteam.config import InvestigatorConfig, ObjectiveConfig, SFTDataConfig, SFTTrainConfig
from lmcontrol.redteam.model import Investigator
from lmcontrol.redteam.strategies import distinct_indices, strategy_text
from lmcontrol.training import TrainConfig, step_generator, train_loop

log = logging.getLogger(__name__)

STATE_DIR = "checkpoint"


class _Params(nn.Module):
    """The trainable LoRA tensors of one adapter, by reference, so checkpoints hold only them."""

    def __init__(self, params: dict[str, nn.Parameter]) -> None:
        super().__init__()
        self.p = nn.ParameterDict({k.replace(".", "__"): v for k, v in params.items()})


def _phase_dir(out: Path, phase: str) -> Path:
    return out / STATE_DIR / phase


def _save_adapter(inv: Investigator, out: Path, phase: str) -> None:
    from peft import get_peft_model_state_dict

    from lmcontrol.atomic import atomic_save_safetensors

    state = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(inv.peft, adapter_name=phase).items()}
    atomic_save_safetensors(state, out / STATE_DIR / f"{phase}.safetensors")


def _load_adapter(inv: Investigator, out: Path, phase: str) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(inv.peft, load_file(str(out / STATE_DIR / f"{phase}.safetensors")), adapter_name=phase)


def _phases(out: Path) -> dict[str, Any]:
    f = out / STATE_DIR / "phases.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def _mark(out: Path, phase: str, summary: dict[str, Any]) -> None:
    done = _phases(out)
    done[phase] = summary
    f = out / STATE_DIR / "phases.json"
    f.with_suffix(".tmp").write_text(json.dumps(done, indent=1))
    f.with_suffix(".tmp").replace(f)


# ---------------------------------------------------------------------------------------------------------
# SFT


def train_sft(
    inv: Investigator, pairs: Sequence[dict[str, str]], config: SFTTrainConfig, out: Path, resume: bool, progress: bool
) -> dict[str, Any]:
    """Maximise log q_sft(x | y) on the reversed pairs (token-averaged cross-entropy)."""
    if not pairs:
        raise LMControlError("no SFT pairs to train on")
    steps = max(1, math.ceil(config.epochs * len(pairs) / config.batch_size))
    n = len(pairs)

    def batch_fn(step: int, rank: int, world: int) -> list[dict[str, str]]:
        epoch, pos = divmod(step * config.batch_size, n)
        order = torch.randperm(n, generator=step_generator(config.seed, epoch)).tolist()
        return [pairs[order[(pos + i) % n]] for i in range(config.batch_size)]

    def loss_fn(_module: nn.Module, batch: list[dict[str, str]]) -> torch.Tensor:
        inv.set_adapter("sft", trainable=True)
        from lmcontrol.redteam.model import teacher_forced_logprobs

        lp, ntok = teacher_forced_logprobs(
            inv.lm.model, inv.tokenizer, [inv.context(b["response"]) for b in batch], [b["prompt"] for b in batch]
        )
        return -lp.sum() / ntok.sum()

    inv.set_adapter("sft", trainable=True)
    holder = _Params(inv.trainable_parameters("sft"))
    cfg = TrainConfig(
        steps=steps,
        lr=config.lr,
        warmup_steps=min(10, steps),
        checkpoint_every=20,
        log_every=10,
        seed=config.seed,
        progress=progress,
    )
    ck = _phase_dir(out, "sft")
    res = train_loop(
        holder, loss_fn, batch_fn, cfg, ck, resume=resume and (ck / STATE_DIR).is_dir(), description="investigator SFT"
    )
    return {
        "steps": steps,
        "pairs": n,
        "loss_first": res.losses[0] if res.losses else None,
        "loss_final": res.final_loss,
        "seconds": round(res.seconds, 1),
    }


# ---------------------------------------------------------------------------------------------------------
# one Frank-Wolfe round


def round_rewards(
    inv: Investigator,
    target: LanguageModel,
    replies: Sequence[str],
    prompts: Sequence[str],
    config: ObjectiveConfig,
    prev_eta: dict[str, float] | None,
    controls: Sequence[Control] = (),
) -> dict[str, torch.Tensor]:
    """The parts of r_i(x) that do not depend on the adapter being trained (eq. 4), each (B,).

    ``fixed = log p(y|x) + beta2 * log p_prior(x) - beta1 * log qbar_{i-1}(x|y)`` (the last term only when a
    previous mixture exists; round 1 adds ``-beta1 * log q_1`` from the policy's own pass).
    """
    from lmcontrol.scoring import score

    safe = [p if p.strip() else "." for p in prompts]
    logp_y = score(target, safe, list(replies), controls, batch_size=len(safe)).sum_logprobs
    prior, _ = inv.prior_logprob(safe)
    fixed = logp_y + config.beta2 * prior
    qbar = torch.zeros_like(fixed)
    if prev_eta:
        qbar = inv.mixture_logprob(replies, safe, prev_eta)
        fixed = fixed - config.beta1 * qbar
    empty = torch.tensor([not p.strip() for p in prompts])
    fixed = fixed.masked_fill(empty, float(fixed.min()) - 1.0)  # an empty prompt is never rewarded
    return {"fixed": fixed, "logp_y": logp_y, "prior": prior, "qbar": qbar}


def reinforce_loss(logq: torch.Tensor, reward: torch.Tensor, group: int, clip: float) -> torch.Tensor:
    """REINFORCE with a leave-one-out baseline per behaviour: -mean((r - mean_{-j} r) * log q). logq, reward: (B,)."""
    r = reward.view(-1, group)  # (n_behaviours, group)
    baseline = (r.sum(1, keepdim=True) - r) / (group - 1)
    adv = (r - baseline).clamp(-clip, clip).view(-1)
    return -(adv.detach() * logq).mean()


def dpo_loss(logq: torch.Tensor, logq_ref: torch.Tensor, reward: torch.Tensor, group: int, beta: float) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, eq. 7) on the best (w) and worst (l) sample of each behaviour."""
    r = reward.view(-1, group)
    rows = torch.arange(r.shape[0])
    w, lo = rows * group + r.argmax(1), rows * group + r.argmin(1)
    margin = (logq[w] - logq_ref[w]) - (logq[lo] - logq_ref[lo])
    return -torch.nn.functional.logsigmoid(beta * margin).mean()


def best_rows(reward: torch.Tensor, group: int, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Index of each behaviour's highest-reward sample, x_best = argmax_j r_i(x_j) (reward: (B,), B = n * group).

    ``allowed`` (bool, (B,)): only those samples compete (objective 'success': the verified ones); a behaviour with
    none allowed is left out of the result.
    """
    r = reward.view(-1, group)
    rows = torch.arange(r.shape[0])
    if allowed is None:
        return rows * group + r.argmax(1)
    ok = allowed.view(-1, group)
    best = r.masked_fill(~ok, float("-inf")).argmax(1)
    return (rows * group + best)[ok.any(1)]


def kept_rows(
    reward: torch.Tensor,
    group: int,
    texts: Sequence[str],
    keep: int,
    max_overlap: float,
    allowed: torch.Tensor | None = None,
) -> list[int]:
    """Up to ``keep`` rows per behaviour to imitate: its x_best (as ``best_rows``), then, by falling r_i, every
    sample whose ``texts`` entry (the prompt with the target's words masked) overlaps each kept one's by less than
    ``max_overlap`` (``strategies.distinct_indices``), so a behaviour teaches several strategies rather than one
    template and its small edits. ``keep == 1`` is ``best_rows``."""
    if keep == 1:
        return best_rows(reward, group, allowed).tolist()
    r = reward.view(-1, group)
    out: list[int] = []
    for b in range(r.shape[0]):
        rows = [b * group + j for j in r[b].argsort(descending=True).tolist()]
        rows = [i for i in rows if allowed is None or bool(allowed[i])]
        out += [rows[k] for k in distinct_indices([texts[i] for i in rows], max_overlap, keep)]
    return out


def verified(
    target: LanguageModel,
    behaviors: Sequence[Behavior],
    prompts: Sequence[str],
    config: ObjectiveConfig,
    controls: Sequence[Control] = (),
) -> torch.Tensor:
    """Whether the target's greedy reply to each prompt realises its behaviour (bool, (B,)), as the attack checks."""
    from lmcontrol.redteam.attack import greedy_replies
    from lmcontrol.redteam.behaviors import successes

    replies = greedy_replies(target, prompts, config.verify_tokens, len(prompts), controls)
    ok = [successes(b, [x], [r], config.match_words)[0] for b, x, r in zip(behaviors, prompts, replies, strict=True)]
    return torch.tensor(ok, dtype=torch.bool)


def train_round(
    inv: Investigator,
    target: LanguageModel,
    behaviors: Sequence[Behavior],
    name: str,
    prev_eta: dict[str, float] | None,
    config: ObjectiveConfig,
    out: Path,
    resume: bool,
    progress: bool,
    controls: Sequence[Control] = (),
) -> dict[str, Any]:
    """Train adapter ``name`` (already initialised from SFT) on r_i; returns a summary of the round."""
    if not behaviors:
        raise LMControlError("no behaviours to train the objective on")
    m = config.samples_per_behavior
    history: list[dict[str, float]] = []

    def batch_fn(step: int, rank: int, world: int) -> dict[str, Any]:
        gen = step_generator(config.seed, step)
        idx = torch.randint(len(behaviors), (config.behaviors_per_step,), generator=gen).tolist()
        replies_b = [behaviors[i].condition for i in idx]
        samples = inv.sample(
            replies_b,
            m,
            adapters={name: 1.0},
            temperature=config.temperature,
            max_new_tokens=config.max_prompt_tokens,
            seed=int(torch.randint(2**31, (1,), generator=gen)),
        )
        prompts = [x for row in samples for x in row]
        replies = [y for y in replies_b for _ in range(m)]
        with torch.no_grad():
            parts = round_rewards(inv, target, replies, prompts, config, prev_eta, controls)
            if config.objective == "dpo":
                parts["ref"] = inv.logprob(replies, [p or "." for p in prompts], "sft")
            if config.objective == "success":
                ok = verified(target, [behaviors[i] for i in idx for _ in range(m)], [p or "." for p in prompts],
                              config, controls)  # fmt: skip
                parts["success"] = ok & torch.tensor([bool(p.strip()) for p in prompts])
        masked = [strategy_text(x, y, "") for x, y in zip(prompts, replies, strict=True)]
        return {"replies": replies, "prompts": [p or "." for p in prompts], "masked": masked, **parts}

    def loss_fn(_module: nn.Module, batch: dict[str, Any]) -> torch.Tensor | None:
        reward = batch["fixed"]
        if config.objective in ("best", "success"):  # only the chosen samples need a gradient
            if prev_eta is None:  # round 1: the policy itself stands in for qbar_0
                with torch.no_grad():
                    reward = reward - config.beta1 * inv.logprob(batch["replies"], batch["prompts"], name)
            rows = kept_rows(reward, m, batch["masked"], config.keep_per_behavior, config.max_overlap,
                             batch.get("success"))  # fmt: skip
            if rows:
                logq = inv.logprob([batch["replies"][i] for i in rows], [batch["prompts"][i] for i in rows], name)
                loss = -logq.mean()  # reward-ranked fine-tuning: maximise log q(x_best | y)
            else:  # no verified success in this step: nothing to imitate, no update
                logq, loss = torch.zeros(1), None
        else:
            logq = inv.logprob(batch["replies"], batch["prompts"], name)
        if config.objective == "dpo":
            if prev_eta is None:  # round 1 under DPO: the SFT model stands in for qbar_0
                reward = reward - config.beta1 * batch["ref"]
            loss = dpo_loss(logq, batch["ref"], reward, m, config.dpo_beta)
        elif config.objective == "reinforce":
            if prev_eta is None:
                reward = reward - config.beta1 * logq.detach()  # entropy bonus: E_q[-log q]
            loss = reinforce_loss(logq, reward, m, config.reward_clip)
        history.append(
            {
                "reward": float(reward.mean()),
                "logp_y": float(batch["logp_y"].mean()),
                "logq": float(logq.detach().mean()),
                "prior": float(batch["prior"].mean()),
            }
        )
        if "success" in batch:
            history[-1]["success"] = float(batch["success"].float().mean())
        if len(history) % 5 == 0:
            recent = history[-5:]
            log.info(
                "%s step %d: %s",
                name,
                len(history),
                {k: round(sum(h[k] for h in recent) / len(recent), 2) for k in recent[0]},
            )
        return loss

    inv.set_adapter(name, trainable=True)
    holder = _Params(inv.trainable_parameters(name))
    cfg = TrainConfig(
        steps=max(config.steps, 1), lr=config.lr, checkpoint_every=5, log_every=5, seed=config.seed, progress=progress
    )
    ck = _phase_dir(out, name)
    t0 = time.perf_counter()
    if config.steps > 0:
        train_loop(
            holder,
            loss_fn,
            batch_fn,
            cfg,
            ck,
            resume=resume and (ck / STATE_DIR).is_dir(),
            description=f"investigator {name}",
        )
    k = min(5, len(history))
    verified_steps = [h for h in history if "success" in h]  # objective 'success' only
    return {
        "steps": config.steps,
        "seconds": round(time.perf_counter() - t0, 1),
        "logp_y_first": sum(h["logp_y"] for h in history[:k]) / k if k else None,
        "logp_y_last": sum(h["logp_y"] for h in history[-k:]) / k if k else None,
        "reward_first": sum(h["reward"] for h in history[:k]) / k if k else None,
        "reward_last": sum(h["reward"] for h in history[-k:]) / k if k else None,
        "success_rate": sum(h["success"] for h in verified_steps) / len(verified_steps) if verified_steps else None,
    }


# ---------------------------------------------------------------------------------------------------------
# the whole pipeline


def _import_sft(target: LanguageModel, artifact: Path, out: Path) -> None:
    """Copy the SFT adapter of a trained investigator artifact into ``out``'s state, marked as done."""
    from peft import get_peft_model_state_dict

    from lmcontrol.atomic import atomic_save_safetensors

    source = Investigator.load(artifact, target)  # refuses an artifact made for another base model
    if "sft" not in source.adapters:
        raise LMControlError(f"--sft-from {artifact}: the artifact has no 'sft' adapter")
    state = get_peft_model_state_dict(source.peft, adapter_name="sft")
    atomic_save_safetensors({k: v.detach().contiguous() for k, v in state.items()}, out / STATE_DIR / "sft.safetensors")
    summary = dict((source.meta.extra or {}).get("phases", {}).get("sft", {}))
    summary["pairs"] = summary.get("pairs") or source.meta.metrics.get("sft_pairs")
    _mark(out, "sft", {**summary, "from": str(artifact)})


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    """Everything ``lmcontrol train investigator`` decides (saved, nested, in the artifact's config)."""

    investigator: InvestigatorConfig = InvestigatorConfig()
    sft_data: SFTDataConfig = SFTDataConfig()
    sft: SFTTrainConfig = SFTTrainConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    behaviors: str = "advbench:train"  # AdvBench split whose targets the objective trains on


def train_investigator(
    target: LanguageModel,
    plan: TrainPlan,
    out: str | Path,
    *,
    behaviors: Sequence[Behavior],
    resume: bool = False,
    progress: bool = True,
    controls: Sequence[Control] = (),
    sft_from: str | Path | None = None,
) -> Investigator:
    """SFT -> rounds 1..R of the objective -> save the mixture artifact at ``out``. Resumable phase by phase.

    ``sft_from``: an investigator artifact whose SFT reverse model is reused (no pair generation, no SFT), so
    the rounds can be retrained under another objective in minutes instead of hours.
    """
    from lmcontrol.redteam.sft_data import generate_pairs

    out = Path(out)
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    done = _phases(out) if resume else {}
    if not resume:
        (out / STATE_DIR / "phases.json").unlink(missing_ok=True)
    if sft_from is not None and "sft" not in done:
        _import_sft(target, Path(sft_from), out)
        done = _phases(out)
    t0 = time.perf_counter()
    pairs = (
        []
        if "sft" in done
        else generate_pairs(target, plan.sft_data, out / STATE_DIR / "sft_pairs.jsonl", progress=progress)
    )
    gen_seconds = time.perf_counter() - t0
    inv = Investigator(target, dataclasses.replace(plan.investigator, adapters=("sft",), eta=(1.0,)))
    if "sft" in done:
        _load_adapter(inv, out, "sft")
    else:
        summary = train_sft(inv, pairs, plan.sft, out, resume, progress)
        _save_adapter(inv, out, "sft")
        _mark(out, "sft", summary)
    rounds: list[str] = []
    for i in range(1, plan.objective.rounds + 1):
        name = f"round{i}"
        prev = {r: 1.0 / len(rounds) for r in rounds} or None
        inv.add_adapter(name, "sft")
        if name in done:
            _load_adapter(inv, out, name)
        else:
            # round i draws its behaviours and prompts from seed + i - 1: with one stream every round would start
            # from the same samples as round 1 and the repulsion term alone would have to tell the rounds apart
            objective = dataclasses.replace(plan.objective, seed=plan.objective.seed + i - 1)
            summary = train_round(inv, target, behaviors, name, prev, objective, out, resume, progress, controls)
            summary.update(beta1=objective.beta1, beta2=objective.beta2, seed=objective.seed)
            _save_adapter(inv, out, name)
            _mark(out, name, summary)
        rounds.append(name)
    inv.set_eta({r: 1.0 / len(rounds) for r in rounds})  # qbar = uniform mixture of the rounds; SFT kept, eta 0
    phases = _phases(out)
    n_pairs = len(pairs) or phases.get("sft", {}).get("pairs", 0)
    metrics = {
        "sft_pairs": n_pairs,
        "sft_pair_generation_s": round(gen_seconds, 1) if pairs else phases.get("sft", {}).get("pair_seconds"),
        "train_seconds_this_run": round(time.perf_counter() - t_all, 1),
    }
    for phase, s in phases.items():
        for k in ("loss_final", "logp_y_first", "logp_y_last", "seconds"):
            if s.get(k) is not None:
                metrics[f"{phase}.{k}"] = s[k]
    sections = {k: dataclasses.asdict(getattr(plan, k)) for k in ("sft_data", "sft", "objective")}
    sections["behaviors"] = plan.behaviors
    inv.save(
        out,
        sections=sections,
        data=f"SFT: {n_pairs} (prompt, greedy reply) pairs from HH / HarmfulQA / AG News + C4 requests; "
        f"objective: {len(behaviors)} AdvBench behaviours ({plan.behaviors})",
        metrics=metrics,
        extra={"phases": phases},
        description="Investigator q(x | y) for red-teaming (Li et al. 2025): LoRA adapters over the base LM, "
        "one per Frank-Wolfe round (sampling mixture eta over rounds) plus the SFT reverse model (eta 0).",
    )
    return inv
