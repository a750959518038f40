"""The training loop every method uses: Accelerate, progress bar, checkpoints without pickle, exact resume.

A trainer supplies a module, a loss function and a *batch function* ``batch_fn(step, rank, world)`` that
returns the batch for that step and process. Batches are a pure function of (seed, step, rank), so resuming
from a checkpoint at step s continues with exactly the batches an uninterrupted run would have seen.

Checkpoints (``<out>/checkpoint/``) hold the trainable weights, the optimizer state flattened into
safetensors, and a JSON file with the step, losses and RNG seed — no ``torch.save``/pickle anywhere. They are
written atomically, so a run killed mid-write resumes from the previous checkpoint.

Run on several CPU processes with ``accelerate launch --cpu --num_processes 2 -m lmcontrol ...``; gradients
are averaged by Accelerate (DDP over gloo) and every process ends with identical weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmcontrol import LMControlError
from lmcontrol.artifacts import atomic_write_dir

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every trainer."""

    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    checkpoint_every: int = 200
    log_every: int = 50
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise LMControlError(f"steps must be >= 1, got {self.steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise LMControlError(f"learning rate must be a positive number, got {self.lr}")
        if self.checkpoint_every < 1:
            raise LMControlError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")


@dataclasses.dataclass
class TrainResult:
    steps: int
    losses: list[float]  # mean loss per log interval
    seconds: float
    resumed_from: int
    world_size: int
    evals: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # from ``evaluate`` at checkpoints

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


BatchFn = Callable[[int, int, int], Any]  # (step, rank, world_size) -> batch
LossFn = Callable[[nn.Module, Any], torch.Tensor]


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The RNG a batch function should use for ``step`` (pure in (seed, step, rank) → exact resume)."""
    return torch.Generator().manual_seed(hash((seed, step, rank)) % (2**63))


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            name = f"state.{pid}.{key}"
            if torch.is_tensor(value):
                tensors[name] = value.detach().cpu().contiguous()
            else:
                scalars[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, info: dict[str, Any]
) -> None:
    from safetensors.torch import save_file, save_model

    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())

    def fill(tmp: Path) -> None:
        # save_model de-duplicates tied tensors (e.g. embed_tokens / lm_head), which save_file refuses.
        save_model(model, str(tmp / "weights.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**info, "optimizer": opt_meta}, indent=1))

    atomic_write_dir(out_dir / CHECKPOINT_DIR, fill)


def load_checkpoint(out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    from safetensors.torch import load_file, load_model

    ck = out_dir / CHECKPOINT_DIR
    if not (ck / "state.json").is_file():
        raise LMControlError(f"--resume: no checkpoint in {ck}")
    info = json.loads((ck / "state.json").read_text())
    load_model(model, str(ck / "weights.safetensors"))
    optimizer.load_state_dict(
        _unflatten_optimizer(load_file(str(ck / "optimizer.safetensors")), info.pop("optimizer"))
    )
    return info


def train_loop(
    model: nn.Module,
    loss_fn: LossFn,
    batch_fn: BatchFn,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    parameters: list[nn.Parameter] | None = None,
    description: str = "training",
    evaluate: Callable[[nn.Module, int], dict[str, Any]] | None = None,
) -> TrainResult:
    """Optimise ``model`` (only ``parameters`` if given, else all that require grad) with AdamW.

    Args:
        model: the trainable module (a frozen LM may be captured inside ``loss_fn`` instead).
        loss_fn: ``loss_fn(model, batch) -> scalar loss``.
        batch_fn: ``batch_fn(step, rank, world_size) -> batch``; use ``step_generator`` for randomness.
        config: steps, learning rate, schedule, checkpointing.
        out_dir: where ``checkpoint/`` goes.
        resume: continue from ``out_dir/checkpoint`` (error if there is none).
        parameters: subset of parameters to train.
        description: label for the progress bar.
        evaluate: ``evaluate(model, step) -> dict`` run (in eval mode, no grad) before each checkpoint; the
            results are kept in the checkpoint (so they survive a resume) and returned in ``TrainResult.evals``.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    out_dir = Path(out_dir)
    accelerator = Accelerator(cpu=True)
    set_seed(config.seed)
    params = parameters if parameters is not None else [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LMControlError("nothing to train: no parameter requires grad")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    start, losses, evals = 0, [], []
    if resume:
        info = load_checkpoint(out_dir, model, optimizer)
        start, losses, evals = int(info["step"]), list(info["losses"]), list(info.get("evals", []))
        log.warning("resuming %s from step %d", description, start)

    def lr_lambda(step: int) -> float:
        warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
        return warm * 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps))  # cosine decay

    # On resume the schedule continues from `start` (offset, rather than replaying scheduler steps).
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s + start))
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    rank, world = accelerator.process_index, accelerator.num_processes
    t0 = time.perf_counter()
    running: list[float] = []
    progress = _progress(config.progress and accelerator.is_main_process, description, config.steps, start)
    wrapped.train()
    for step in range(start, config.steps):
        batch = batch_fn(step, rank, world)
        loss = loss_fn(wrapped, batch)
        if not torch.isfinite(loss):
            raise LMControlError(
                f"{description}: loss became {loss.item()} at step {step}; lower the learning rate"
            )
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if config.grad_clip:
            accelerator.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()
        running.append(float(loss.detach()))
        if progress is not None:
            progress.set_postfix(loss=f"{running[-1]:.4f}")
            progress.update(1)
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            losses.append(sum(running) / len(running))
            running = []
        if (
            (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps
        ) and accelerator.is_main_process:
            if evaluate is not None:
                wrapped.eval()
                with torch.no_grad():
                    evals.append({"step": step + 1, **evaluate(accelerator.unwrap_model(wrapped), step + 1)})
                log.info("%s step %d: %s", description, step + 1, evals[-1])
                wrapped.train()
            save_checkpoint(
                out_dir,
                accelerator.unwrap_model(wrapped),
                optimizer,
                {"step": step + 1, "losses": losses, "evals": evals},
            )
        accelerator.wait_for_everyone()
    if progress is not None:
        progress.close()
    wrapped.eval()
    return TrainResult(
        steps=config.steps,
        losses=losses,
        seconds=time.perf_counter() - t0,
        resumed_from=start,
        world_size=world,
        evals=evals,
    )


def _progress(enabled: bool, description: str, total: int, start: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=description, dynamic_ncols=True)
