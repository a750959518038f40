"""Trainers: the Diffusion-LM denoiser on E2E, then the noised-latent classifiers used for control.

Both go through ``lmcontrol.training.train_loop`` (checkpoints, exact ``--resume``); batches are a pure
function of (seed, step) so a resumed run sees the same batches an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch

from lmcontrol.diffusion_lm.config import DiffusionLMConfig, DiffusionTrainSettings  # noqa: F401 - re-exported
from lmcontrol.diffusion_lm.losses import diffusion_lm_loss
from lmcontrol.diffusion_lm.model import DiffusionLM
from lmcontrol.diffusion_lm.vocab import Vocab
from lmcontrol.training import TrainConfig, step_generator, train_loop

log = logging.getLogger(__name__)

DATA_SPEC = "e2e"
DATA_NOTE = (
    "E2E train split, 42,061 tokenized sentences (harvardnlp/neural-template-gen e2e_aligned.tar.gz via "
    "lmcontrol.data.load_dataset('e2e', split='train'))"
)


def e2e_texts(split: str = "train") -> list[str]:
    """The tokenized E2E training sentences."""
    from lmcontrol.data import load_dataset

    return [row["text"] for row in load_dataset(DATA_SPEC, split=split)]


def encode_corpus(texts: list[str], vocab: Vocab, seq_len: int) -> torch.Tensor:
    """All sentences as ``START w… END PAD…`` ids: (N, seq_len) long."""
    return torch.tensor([vocab.encode(text, seq_len) for text in texts], dtype=torch.long)


CURVE_EVERY = 500  # steps between the loss-curve points kept in the artifact


def plot_losses(
    losses: list[float], log_every: int, path: Path, title: str, before: ParentCurve | None = None
) -> None:
    """Save a loss-curve PNG (log-scale y); ``before`` = the curve of the run this one continued."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    start = 0
    if before is not None:
        ax.plot(before.steps, before.losses, label="initial run")
        start = before.total_steps
        ax.axvline(start, color="grey", lw=0.8, ls=":")
    ax.plot([start + (i + 1) * log_every for i in range(len(losses))], losses,
            label="continued (--init-from)" if before else None)  # fmt: skip
    if before is not None:
        ax.legend(fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss (mean over {log_every} steps)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def evaluate(
    model: DiffusionLM, ids: torch.Tensor, seed: int = 1234, batch_size: int = 128
) -> dict[str, float]:
    """Mean loss terms on held-out ids, with fixed noise."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    totals: dict[str, float] = {}
    n = 0
    for start in range(0, ids.shape[0], batch_size):
        out = diffusion_lm_loss(model, ids[start : start + batch_size], g)
        b = ids[start : start + batch_size].shape[0]
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + float(v) * b
        n += b
    return {k: v / n for k, v in totals.items()}


def train_diffusion_lm(
    config: DiffusionLMConfig,
    settings: DiffusionTrainSettings,
    out: Path,
    work_dir: Path,
    *,
    resume: bool = False,
    figure: Path | None = None,
) -> dict[str, Any]:
    """Train the denoiser on E2E and write the artifact to ``out``; returns the metrics."""
    texts = e2e_texts("train")
    vocab = Vocab.build(texts, settings.min_count)
    config = dataclasses.replace(config, vocab_size=len(vocab))
    ids = encode_corpus(texts, vocab, config.seq_len)  # (N, L)
    valid_ids = encode_corpus(_valid_texts(), vocab, config.seq_len)[:512]
    torch.manual_seed(settings.seed)
    model = _initial_model(config, settings, vocab)
    before = _parent_curve(settings.init_from)  # read now: the parent may be gone by the end of a long run
    log.warning(
        "diffusion-lm: %d parameters, vocab %d, %d sentences", model.num_parameters(), len(vocab), len(ids)
    )

    def batch_fn(step: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Generator]:
        g = step_generator(settings.seed, step, rank)
        idx = torch.randint(0, ids.shape[0], (settings.batch_size,), generator=g)
        return ids[idx], g  # the same generator then draws the noise and t inside the loss

    terms: dict[str, list[float]] = {"mse": [], "nll": [], "prior": []}

    def loss_fn(m: torch.nn.Module, batch: tuple[torch.Tensor, torch.Generator]) -> torch.Tensor:
        with torch.autocast(batch[0].device.type, dtype=torch.bfloat16, enabled=settings.bf16):
            out_terms = diffusion_lm_loss(m, batch[0], batch[1], t_sampling=settings.t_sampling)
        for k in terms:
            terms[k].append(float(out_terms[k]))
        if len(terms["mse"]) % settings.log_every == 0:
            recent = {k: sum(v[-settings.log_every :]) / settings.log_every for k, v in terms.items()}
            log.warning(
                "terms over last %d steps: %s",
                settings.log_every,
                " ".join(f"{k}={v:.4f}" for k, v in recent.items()),
            )
        return out_terms["loss"]

    tc = TrainConfig(
        steps=settings.steps,
        lr=settings.lr,
        warmup_steps=settings.warmup_steps,
        seed=settings.seed,
        checkpoint_every=settings.checkpoint_every,
        log_every=settings.log_every,
        progress=False,
    )
    t0 = time.perf_counter()
    result = train_loop(model, loss_fn, batch_fn, tc, work_dir, resume=resume, description="diffusion-lm")
    valid = evaluate(model, valid_ids)
    metrics = {
        "final_train_loss": result.final_loss,
        **{f"valid_{k}": v for k, v in valid.items()},
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "train_seconds_this_run": round(time.perf_counter() - t0, 1),
        "parameters": model.num_parameters(),
    }
    every = max(CURVE_EVERY // settings.log_every, 1)
    curve = [round(x, 4) for x in result.losses][every - 1 :: every]  # one point per CURVE_EVERY steps
    if figure is not None:
        plot_losses(result.losses, settings.log_every, figure, "Diffusion-LM on E2E: training loss", before)
    model.save_with_vocab(
        out,
        data=DATA_NOTE,
        metrics=metrics,
        extra={
            "train_settings": dataclasses.asdict(settings),
            "loss_curve_every": every * settings.log_every,
            "loss_curve": curve,
            "total_steps": result.steps + (before.total_steps if before else 0),
            **({"init_loss_curve_steps": before.steps, "init_loss_curve": before.losses} if before else {}),
            "loss_figure": str(figure) if figure else None,
        },
        description=(
            "Diffusion-LM (Li et al. 2022) denoiser trained on E2E: learned word embeddings, sqrt schedule, "
            "x0-prediction, tied rounding head. Load with `DiffusionLM.load(path)`."
            + (f"\n\nLoss curve: `{figure}`." if figure else "")
        ),
    )
    return metrics


class ParentCurve(NamedTuple):
    """The training curve of the artifact a run continued from."""

    steps: list[int]  # the step each loss was logged at
    losses: list[float]
    total_steps: int  # steps behind the parent artifact (its own continuations included)


def _parent_curve(init_from: str) -> ParentCurve | None:
    """The loss curve stored in the artifact a run continues from (None for a fresh run or no curve)."""
    if not init_from:
        return None
    from lmcontrol.artifacts import read_meta

    meta = read_meta(init_from)
    extra, metrics = meta.extra or {}, meta.metrics or {}
    total = int(extra.get("total_steps", metrics.get("steps", 0)))
    if "loss_curve" in extra:
        every, losses = int(extra["loss_curve_every"]), list(extra["loss_curve"])
        steps = [total - every * (len(losses) - 1 - i) for i in range(len(losses))]  # the last point ends the run
        return ParentCurve(steps, losses, total)
    if "loss_curve_every_50_steps" in extra:  # the first artifacts kept losses[::10] of a per-50-step log
        losses = list(extra["loss_curve_every_50_steps"])
        return ParentCurve([50 + 500 * i for i in range(len(losses))], losses, total)
    return None


def _initial_model(config: DiffusionLMConfig, settings: DiffusionTrainSettings, vocab: Vocab) -> DiffusionLM:
    """A fresh denoiser, or (``init_from``) a copy of a trained one to continue under a new schedule.

    Continuing needs the same shape and vocabulary: the artifact's config must equal the one asked for (so a
    typo in ``--width`` is an error, not a silently different model). ``freeze_embeddings`` keeps E fixed, so
    the noised-latent classifiers trained against the starting artifact remain valid for the continued one.
    """
    from lmcontrol import LMControlError

    if not settings.init_from:
        if settings.freeze_embeddings:
            raise LMControlError("--freeze-embeddings needs --init-from (fresh embeddings must be learned)")
        model = DiffusionLM(config)
        model.vocab = vocab
        return model
    model = DiffusionLM.load(settings.init_from)
    if model.vocab is None or model.vocab.words != vocab.words:
        raise LMControlError(
            f"--init-from {settings.init_from}: its vocabulary differs from the one built here (min_count "
            f"{settings.min_count}); continue with the min_count it was trained with"
        )
    theirs = dataclasses.replace(model.config, dropout=config.dropout)  # dropout may change; nothing else
    if theirs != config:
        diff = {k: (getattr(theirs, k), getattr(config, k)) for k in dataclasses.asdict(config)
                if getattr(theirs, k) != getattr(config, k)}  # fmt: skip
        raise LMControlError(
            f"--init-from {settings.init_from} has a different shape: "
            + ", ".join(f"{k}={a} (asked {b})" for k, (a, b) in diff.items())
        )
    parent = model
    model = DiffusionLM(config)  # the asked-for config (its dropout), the parent's weights
    model.load_state_dict(parent.state_dict())
    model.vocab, model.meta = parent.vocab, None
    if settings.freeze_embeddings:
        model.word_embedding.weight.requires_grad_(False)
    return model


def _valid_texts() -> list[str]:
    from lmcontrol.data import load_dataset

    return [ref for row in load_dataset("e2e:tokenized", split="valid") for ref in row["references"]]
