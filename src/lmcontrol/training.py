"""The training loop every method uses: Accelerate, progress bar, checkpoints without pickle, exact resume.

A trainer supplies a module, a loss function and a *batch function* ``batch_fn(step, rank, world)`` that
returns the batch for that step and process. Batches are a pure function of (seed, step, rank), so resuming
from a checkpoint at step s continues with exactly the batches an uninterrupted run would have seen.

Checkpoints (``<out>/checkpoint/``) hold the trainable weights, the optimizer state flattened into
safetensors, and a JSON file with the step, the losses (including the unfinished log interval), the RNG states
(torch, numpy, random: dropout draws from them) and the sha256 of both tensor files — no ``torch.save``/pickle
anywhere. They are written atomically, so a run killed mid-write resumes from the previous checkpoint, and a
resumed run records the same losses as an uninterrupted one. ``--resume`` refuses, in one line, a checkpoint
made for another architecture, a truncated or edited tensor file, and an invalid ``state.json``.

Run on several CPU processes with ``accelerate launch --cpu --num_processes 2 -m lmcontrol ...``; gradients
are averaged by Accelerate (DDP over gloo) and every process ends with identical weights.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from lmcontrol import LMControlError
from lmcontrol.artifacts import atomic_write_dir
from lmcontrol.train_config import TrainConfig  # torch-free, so CLIs build their options without torch

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"


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
LossFn = Callable[[nn.Module, Any], torch.Tensor | None]  # None: skip this batch's update


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


def _rng_state() -> dict[str, Any]:
    """The global RNG states (JSON-clean), so dropout after a resume draws what it would have drawn."""
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii"),
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)],
        "random": [version, list(internal), gauss_next],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    raw = base64.b64decode(state["torch"], validate=True)
    torch.set_rng_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((str(kind), np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(gauss)))
    version, internal, gauss_next = state["random"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss_next))


def save_checkpoint(
    out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, info: dict[str, Any]
) -> None:
    from safetensors.torch import save_file, save_model

    from lmcontrol.artifacts import sha256_file

    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())

    def fill(tmp: Path) -> None:
        # save_model de-duplicates tied tensors (e.g. embed_tokens / lm_head), which save_file refuses.
        save_model(model, str(tmp / "weights.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        sha = {name: sha256_file(tmp / name) for name in ("weights.safetensors", "optimizer.safetensors")}
        state = {**info, "rng": _rng_state(), "sha256": sha, "optimizer": opt_meta}
        (tmp / "state.json").write_text(json.dumps(state, indent=1))

    atomic_write_dir(out_dir / CHECKPOINT_DIR, fill)


class _CheckpointState(BaseModel):
    """``state.json`` as ``--resume`` may trust it."""

    model_config = ConfigDict(extra="allow")

    step: int = Field(ge=0)
    losses: list[float]
    running: list[float] = []
    evals: list[dict[str, Any]] = []
    rng: dict[str, Any] | None = None
    sha256: dict[str, str] | None = None
    optimizer: dict[str, Any]


def load_checkpoint(out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore weights, optimizer and RNG state from ``out_dir/checkpoint``; every failure is one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, load_model

    from lmcontrol.artifacts import check_tensors, pydantic_reason, sha256_file

    ck = out_dir / CHECKPOINT_DIR
    if not (ck / "state.json").is_file():
        raise LMControlError(f"--resume: no checkpoint in {ck}")

    def bad(reason: str) -> LMControlError:
        return LMControlError(f"--resume: the checkpoint in {ck} is unusable: {reason}")

    try:
        raw = json.loads((ck / "state.json").read_text(encoding="utf-8"))
        info = _CheckpointState.model_validate(raw).model_dump()
    except ValidationError as e:
        raise bad(f"state.json: {pydantic_reason(e)}") from None
    except (OSError, ValueError, RecursionError) as e:
        raise bad(f"state.json is not valid JSON ({type(e).__name__})") from None
    for name in ("weights.safetensors", "optimizer.safetensors"):
        if not (ck / name).is_file():
            raise bad(f"{name} is missing")
        if info["sha256"] and info["sha256"].get(name) and sha256_file(ck / name) != info["sha256"][name]:
            raise bad(f"{name} does not match its sha256 in state.json (truncated or changed)")
    try:
        opt_tensors = load_file(str(ck / "optimizer.safetensors"))
        missing, unexpected = load_model(model, str(ck / "weights.safetensors"), strict=False)
    except (SafetensorError, OSError, ValueError) as e:
        raise bad(f"cannot read its tensors ({_first_line(e)})") from None
    except RuntimeError as e:  # shape mismatch
        raise LMControlError(
            f"--resume: the checkpoint in {ck} was made for a different model architecture ({_first_line(e)})"
        ) from None
    if missing or unexpected:
        names = ", ".join((list(missing) + list(unexpected))[:3])
        raise LMControlError(
            f"--resume: the checkpoint in {ck} was made for a different model architecture "
            f"({len(missing)} missing and {len(unexpected)} unexpected tensors: {names})"
        )
    check_tensors(opt_tensors, ck / "optimizer.safetensors")
    try:
        optimizer.load_state_dict(_unflatten_optimizer(opt_tensors, info.pop("optimizer")))
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise bad(f"the optimizer state does not fit this run ({_first_line(e)})") from None
    if info.get("rng"):
        try:
            _set_rng_state(info["rng"])
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise bad(f"state.json: rng: {_first_line(e)}") from None
    return info


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__


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
        loss_fn: ``loss_fn(model, batch) -> scalar loss``, or None when the batch has nothing to learn from.
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

    from lmcontrol.artifacts import check_output_path

    out_dir = Path(out_dir)
    check_output_path(out_dir, flag="--out", directory=True)  # before any step is spent
    accelerator = Accelerator(cpu=True)
    set_seed(config.seed)
    params = parameters if parameters is not None else [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LMControlError("nothing to train: no parameter requires grad")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    start, losses, evals, running = 0, [], [], []
    if resume:
        info = load_checkpoint(out_dir, model, optimizer)
        start, losses, evals = int(info["step"]), list(info["losses"]), list(info.get("evals", []))
        running = list(info.get("running", []))  # the unfinished log interval
        if start > config.steps:
            raise LMControlError(
                f"--resume: the checkpoint in {out_dir / CHECKPOINT_DIR} is at step {start}, past --steps "
                f"{config.steps}"
            )
        log.warning("resuming %s from step %d", description, start)

    def lr_lambda(step: int) -> float:
        warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
        return warm * 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps))  # cosine decay

    # On resume the schedule continues from `start` (offset, rather than replaying scheduler steps).
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s + start))
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    rank, world = accelerator.process_index, accelerator.num_processes
    t0 = time.perf_counter()
    progress = _progress(config.progress and accelerator.is_main_process, description, config.steps, start)
    wrapped.train()
    for step in range(start, config.steps):
        batch = batch_fn(step, rank, world)
        loss = loss_fn(wrapped, batch)
        if loss is not None:  # None: this batch has nothing to learn from; the step passes without an update
            if not torch.isfinite(loss):
                raise LMControlError(
                    f"{description}: loss became {loss.item()} at step {step}; lower the learning rate"
                )
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if config.grad_clip:
                accelerator.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            running.append(float(loss.detach()))
        scheduler.step()
        if progress is not None:
            if running:
                progress.set_postfix(loss=f"{running[-1]:.4f}")
            progress.update(1)
        if ((step + 1) % config.log_every == 0 or step + 1 == config.steps) and running:
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
                {"step": step + 1, "losses": losses, "running": running, "evals": evals},
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
