"""Trainers for DGLM's two networks, on (prefix, continuation) pairs (``dglm.pairs``).

    lmcontrol train dglm-prompter  --steps 2000 --out artifacts/dglm-prompter
    lmcontrol train dglm-diffusion --steps 20000 --out artifacts/dglm-diffusion

**Prompt generator** (paper §3.1): the frozen decoder reads [KV prefix from the generator | 32 prefix tokens |
32 continuation tokens]; loss = cross-entropy on the continuation. The generator sees the continuation's own
embedding, noised to a random α² (cosine schedule shifted by ``augment_scale``). The key metric, measured on
held-out pairs at every checkpoint, is the *proposal gap*: loss with the true proposal vs with another row's
(shuffled) proposal at the inference noise σ² = 0.05 — the control only works if the decoder follows the proposal.

**Semantic diffusion** (paper §3.2): v-prediction MSE on standardised continuation embeddings, conditioned on
the prefix embedding (dropped to a null vector 10% of the time for classifier-free guidance).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from lmcontrol.controls import SoftPrompt
from lmcontrol.dglm.config import (  # noqa: F401 - the run settings are re-exported
    DiffusionRun,
    PrompterRun,
    PromptGeneratorConfig,
    SemanticDiffusionConfig,
)
from lmcontrol.dglm.model import PromptGenerator, SemanticDiffusion
from lmcontrol.dglm.pairs import PairSet, build_pairs, decoder_pairs, space_stats
from lmcontrol.diffusion.schedule import Schedule, add_noise
from lmcontrol.scoring import collate, target_token_logprobs
from lmcontrol.training import TrainConfig, step_generator, train_loop

if TYPE_CHECKING:
    from lmcontrol.models import LanguageModel

log = logging.getLogger(__name__)

INFERENCE_NOISE = 0.05  # σ² of the proposal handed to the prompt generator at inference (paper)


# ---------------------------------------------------------------------------------------------------------
# prompt generator


def continuation_loss(
    lm: LanguageModel,
    prompter: PromptGenerator | None,
    prefix_ids: torch.Tensor,
    cont_ids: torch.Tensor,
    z: torch.Tensor | None = None,
    a2: torch.Tensor | None = None,
    reduce: bool = True,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy (nats/token) of the continuation given the prefix, behind the generator's KV prefix
    for proposals z at α² (or no prefix at all when ``prompter`` is None). ``reduce=False``: per row (B,).
    ``context``: the standardised prefix embeddings a ``prefix_input`` generator reads (``prefix_context``)."""
    batch = collate(prefix_ids.tolist(), cont_ids.tolist(), int(lm.tokenizer.pad_token_id))
    soft = []
    if prompter is not None:
        assert z is not None and a2 is not None
        soft = [SoftPrompt.from_kv(prompter.past_key_values(z, a2, prefix=context))]
    nll = -target_token_logprobs(lm, batch, soft).view(cont_ids.shape)  # (B, C): every row has C tokens
    return nll.mean() if reduce else nll.mean(1)


def prefix_context(lm: LanguageModel, prompter: PromptGenerator, prefix_ids: torch.Tensor) -> torch.Tensor | None:
    """The standardised encoder embeddings (B, d) of the prefixes exactly as the decoder sees them (token ids
    decoded), for a generator with ``prefix_input``; None for one without."""
    if not prompter.config.prefix_input:
        return None
    from lmcontrol.eval.embeddings import embed
    from lmcontrol.models import encoder_id

    name = prompter.config.encoder
    unit = embed(lm.tokenizer.batch_decode(prefix_ids), None if name == encoder_id(None) else name)
    return prompter.space.standardise(torch.from_numpy(unit))


@torch.no_grad()
def proposal_gap(
    lm: LanguageModel,
    prompter: PromptGenerator,
    pairs: PairSet,
    noise: float = INFERENCE_NOISE,
    batch_size: int = 16,
    seed: int = 0,
    prefix_tokens: int | None = None,
) -> dict[str, float]:
    """Held-out continuation loss with the true proposal, a shuffled one (another row's), pure noise (α² ≈ 0),
    and the plain decoder; ``gap`` = shuffled − true (nats/token). ``prefix_tokens``: keep only the last k
    prefix tokens (short prompts, where the proposal has more to add)."""
    g = torch.Generator().manual_seed(seed)
    z = prompter.space.standardise(pairs.cont_emb)
    n = len(pairs)
    a2 = torch.full((n, 1), 1.0 - noise)
    z_noised = add_noise(z, torch.randn(z.shape, generator=g), a2)
    shuffled = z_noised.roll(1, dims=0)
    pure = torch.randn(z.shape, generator=g)
    sums = {"loss_true": 0.0, "loss_shuffled": 0.0, "loss_pure_noise": 0.0, "loss_plain": 0.0}
    for i in range(0, n, batch_size):
        s = slice(i, i + batch_size)
        p, c = pairs.prefix_ids[s, -(prefix_tokens or pairs.prefix_ids.shape[1]) :], pairs.cont_ids[s]
        b, ctx = p.shape[0], prefix_context(lm, prompter, p)
        sums["loss_true"] += float(continuation_loss(lm, prompter, p, c, z_noised[s], a2[s], context=ctx)) * b
        sums["loss_shuffled"] += float(continuation_loss(lm, prompter, p, c, shuffled[s], a2[s], context=ctx)) * b
        low = torch.full((b, 1), 1e-3)
        sums["loss_pure_noise"] += float(continuation_loss(lm, prompter, p, c, pure[s], low, context=ctx)) * b
        sums["loss_plain"] += float(continuation_loss(lm, None, p, c)) * b
    out = {k: round(v / n, 4) for k, v in sums.items()}
    out["gap"] = round(out["loss_shuffled"] - out["loss_true"], 4)
    return out


def train_prompter(
    lm: LanguageModel,
    config: PromptGeneratorConfig,
    train_config: TrainConfig,
    run: PrompterRun,
    out: Path,
    *,
    resume: bool = False,
    encoder: str | None = None,
) -> tuple[PromptGenerator, dict[str, Any]]:
    """Train a prompt generator for ``lm`` and save it to ``out`` (checkpoints in ``out/checkpoint``)."""
    torch.manual_seed(train_config.seed)
    lm.model.requires_grad_(False)
    train, heldout = build_pairs(lm, run.sources, encoder=encoder)
    if run.examples is not None:
        train = train.take(run.examples)
    if run.targets == "decoder":
        train = decoder_pairs(lm, train, seed=train_config.seed, encoder=encoder)
    heldout = heldout.take(run.eval_pairs)
    if run.init is not None:  # warm start: the saved generator's config, weights and standardisation
        prompter = PromptGenerator.from_pretrained(run.init, model_name=lm.info.name, hidden_size=lm.info.hidden_size)
        prompter.check_model(lm)
        if config.prefix_input and not prompter.config.prefix_input:
            prompter = prompter.with_prefix_input()  # starts as the saved generator; learns to read the prefix
        config = prompter.config
    else:
        prompter = PromptGenerator(config)
        prompter.base_model, prompter.base_hidden_size = lm.info.name, lm.info.hidden_size
        prompter.space.set(*space_stats(train.cont_emb))
        prompter.init_base(lm)
    z_all = prompter.space.standardise(train.cont_emb)  # (N, d)
    augment = Schedule(kind="cosine", shift=config.augment_scale)
    n, full_prefix = len(train), train.prefix_ids.shape[1]

    def batch_fn(step: int, rank: int, world: int) -> tuple[torch.Tensor, ...]:
        g = step_generator(train_config.seed, step, rank)
        idx = torch.randint(n, (run.batch_size,), generator=g)
        t = torch.rand(run.batch_size, 1, generator=g)
        a2 = augment.alpha_bar(t)
        at_inference = torch.rand(run.batch_size, 1, generator=g) < run.inference_share
        a2 = torch.where(at_inference, torch.full_like(a2, 1.0 - INFERENCE_NOISE), a2)
        z = add_noise(z_all[idx], torch.randn(run.batch_size, z_all.shape[1], generator=g), a2)
        k = int(torch.randint(min(run.min_prefix, full_prefix), full_prefix + 1, (1,), generator=g))
        p = train.prefix_ids[idx, -k:]
        return p, train.cont_ids[idx], z, a2, prefix_context(lm, prompter, p)

    def loss_fn(module: PromptGenerator, batch: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
        p, c, z, a2, ctx = batch
        assert p is not None and c is not None
        return continuation_loss(lm, module, p, c, z, a2, context=ctx)

    def evaluate(module: PromptGenerator, step: int) -> dict[str, Any]:
        short = proposal_gap(lm, module, heldout, prefix_tokens=run.short_prefix)
        return {**proposal_gap(lm, module, heldout), **{f"p{run.short_prefix}_{k}": v for k, v in short.items()}}

    n_params = sum(p.numel() for p in prompter.parameters())
    log.info("prompt generator: %d parameters, %d training pairs", n_params, n)
    result = train_loop(
        prompter, loss_fn, batch_fn, train_config, out, resume=resume, description="dglm prompter", evaluate=evaluate
    )
    final = result.evals[-1] if result.evals else evaluate(prompter, train_config.steps)
    metrics = {
        "train_loss_final": result.final_loss,
        "train_seconds": round(result.seconds, 1),
        "steps": result.steps,
        "batch_size": run.batch_size,
        "train_pairs": n,
        "parameters": n_params,
        "heldout_pairs": len(heldout),
        **{f"heldout_{k}": v for k, v in final.items() if k != "step"},
    }
    prompter.save_pretrained(
        out,
        data=(
            f"{', '.join(run.sources)} 32+32-token pairs ({n} train, held-out documents kept apart)"
            + (", continuations sampled from the decoder (T = 1, p = 0.95)" if run.targets == "decoder" else "")
            + (f", warm-started from {run.init}" if run.init else "")
            + (", reads the prefix embedding as well (prefix_input)" if config.prefix_input else "")
        ),
        metrics=metrics,
        extra={"losses": [round(x, 4) for x in result.losses], "evals": result.evals, "encoder": config.encoder},
    )
    return prompter, metrics


# ---------------------------------------------------------------------------------------------------------
# semantic diffusion


def diffusion_loss(
    model: SemanticDiffusion,
    x: torch.Tensor,
    context: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """‖v̂ − v‖² averaged over rows and dims (Salimans & Ho 2022, v-loss), prefix dropped with p=cond_dropout."""
    sched = model.schedule
    a2 = sched.alpha_bar(t)
    v = model(add_noise(x, eps, a2), a2, model.drop_context(context, generator))
    return F.mse_loss(v, sched.target(x, eps, a2))


@torch.no_grad()
def heldout_diffusion_loss(model: SemanticDiffusion, pairs: PairSet, seed: int = 0) -> dict[str, float]:
    """Held-out v-loss with the true prefix vs the null prefix (a gap > 0 means the prefix is used)."""
    g = torch.Generator().manual_seed(seed)
    x = model.space.standardise(pairs.cont_emb)
    ctx = model.space.standardise(pairs.prefix_emb)
    t = torch.rand(len(pairs), 1, generator=g)
    eps = torch.randn(x.shape, generator=g)
    sched = model.schedule
    a2 = sched.alpha_bar(t)
    z = add_noise(x, eps, a2)
    target = sched.target(x, eps, a2)
    cond = F.mse_loss(model(z, a2, ctx), target).item()
    uncond = F.mse_loss(model(z, a2, None), target).item()
    return {"v_loss_cond": round(cond, 4), "v_loss_uncond": round(uncond, 4), "prefix_gain": round(uncond - cond, 4)}


def train_diffusion(
    lm: LanguageModel,
    config: SemanticDiffusionConfig,
    train_config: TrainConfig,
    run: DiffusionRun,
    out: Path,
    *,
    resume: bool = False,
    encoder: str | None = None,
) -> tuple[SemanticDiffusion, dict[str, Any]]:
    """Train the semantic diffusion model on the pairs' embeddings (the decoder only tokenises) and save it."""
    torch.manual_seed(train_config.seed)
    train, heldout = build_pairs(lm, run.sources, encoder=encoder)
    model = SemanticDiffusion(config)
    model.base_model, model.base_hidden_size = config.encoder, config.embed_dim
    model.space.set(*space_stats(train.cont_emb))
    x_all = model.space.standardise(train.cont_emb)
    c_all = model.space.standardise(train.prefix_emb)
    n = len(train)

    def batch_fn(step: int, rank: int, world: int) -> tuple[torch.Tensor, ...]:
        g = step_generator(train_config.seed, step, rank)
        idx = torch.randint(n, (run.batch_size,), generator=g)
        t = torch.rand(run.batch_size, 1, generator=g)
        eps = torch.randn(run.batch_size, x_all.shape[1], generator=g)
        drop_seed = int(torch.randint(2**31 - 1, (1,), generator=g))
        return x_all[idx], c_all[idx], t, eps, drop_seed

    def loss_fn(module: SemanticDiffusion, batch: tuple[Any, ...]) -> torch.Tensor:
        x, c, t, eps, drop_seed = batch
        return diffusion_loss(module, x, c, t, eps, torch.Generator().manual_seed(drop_seed))

    def evaluate(module: SemanticDiffusion, step: int) -> dict[str, Any]:
        return heldout_diffusion_loss(module, heldout)

    t0 = time.perf_counter()
    result = train_loop(
        model, loss_fn, batch_fn, train_config, out, resume=resume, description="dglm diffusion", evaluate=evaluate
    )
    final = result.evals[-1] if result.evals else evaluate(model, train_config.steps)
    n_params = sum(p.numel() for p in model.parameters())
    metrics = {
        "train_loss_final": result.final_loss,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "steps": result.steps,
        "batch_size": run.batch_size,
        "train_pairs": n,
        "heldout_pairs": len(heldout),
        "parameters": n_params,
        **{f"heldout_{k}": v for k, v in final.items() if k != "step"},
    }
    model.save_pretrained(
        out,
        data=f"{', '.join(run.sources)} 32+32-token pairs ({n} train, held-out documents kept apart)",
        metrics=metrics,
        extra={
            "losses": [round(x, 4) for x in result.losses],
            "evals": result.evals,
            "decoder_tokenizer": lm.info.name,
        },
    )
    return model, metrics
