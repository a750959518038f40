"""The shared training loop: exact resume from a pickle-free checkpoint; two processes under accelerate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lmcontrol import LMControlError
from lmcontrol.training import TrainConfig, step_generator, train_loop

W_TRUE = torch.tensor([1.0, -2.0, 0.5, 3.0])


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def batch_fn(step, rank, world):
    g = step_generator(0, step, rank)
    x = torch.randn(16, 4, generator=g)
    return x, (x @ W_TRUE)[:, None]


def loss_fn(m, b):
    x, y = b
    return ((m(x) - y) ** 2).mean()


CFG = TrainConfig(steps=30, lr=3e-2, checkpoint_every=10, log_every=10, progress=False)


def test_loss_decreases_and_checkpoint_is_pickle_free(tmp_path):
    model = make_model()
    res = train_loop(model, loss_fn, batch_fn, CFG, tmp_path)
    assert res.losses[-1] < res.losses[0]
    files = sorted(p.name for p in (tmp_path / "checkpoint").iterdir())
    assert files == ["optimizer.safetensors", "state.json", "weights.safetensors"]


def test_a_none_loss_skips_the_update(tmp_path):
    """loss_fn may return None (nothing to learn from a batch): no optimizer step, not even weight decay."""
    model = make_model()
    before = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(steps=4, lr=3e-2, weight_decay=0.1, checkpoint_every=2, log_every=2, progress=False)
    res = train_loop(model, lambda m, b: None, batch_fn, cfg, tmp_path / "none")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)) and res.losses == []
    skip_odd = lambda m, b: None if int(b[0][0, 0] * 1e6) % 2 else loss_fn(m, b)  # noqa: E731
    res = train_loop(make_model(), skip_odd, batch_fn, cfg, tmp_path / "some")
    assert all(torch.isfinite(torch.tensor(x)) for x in res.losses)


def test_resume_is_exact(tmp_path):
    full = make_model()
    train_loop(full, loss_fn, batch_fn, CFG, tmp_path / "full")

    def dying_batch_fn(step, rank, world):
        if step == 25:
            raise KeyboardInterrupt  # killed between checkpoints (last one at step 20)
        return batch_fn(step, rank, world)

    broken = make_model()
    with pytest.raises(KeyboardInterrupt):
        train_loop(broken, loss_fn, dying_batch_fn, CFG, tmp_path / "part")
    resumed = make_model()
    res = train_loop(resumed, loss_fn, batch_fn, CFG, tmp_path / "part", resume=True)
    assert res.resumed_from == 20
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_checkpoint_evaluations_survive_resume(tmp_path):
    def evaluate(model, step):
        x, y = batch_fn(10_000, 0, 1)
        return {"heldout": float(loss_fn(model, (x, y))), "training": model.training}

    def dying_batch_fn(step, rank, world):
        if step == 25:
            raise KeyboardInterrupt
        return batch_fn(step, rank, world)

    with pytest.raises(KeyboardInterrupt):
        train_loop(make_model(), loss_fn, dying_batch_fn, CFG, tmp_path, evaluate=evaluate)
    res = train_loop(make_model(), loss_fn, batch_fn, CFG, tmp_path, resume=True, evaluate=evaluate)
    assert [e["step"] for e in res.evals] == [10, 20, 30]
    assert not any(e["training"] for e in res.evals)  # evaluated in eval mode
    assert res.evals[-1]["heldout"] < res.evals[0]["heldout"]


def test_resume_without_checkpoint_is_clear(tmp_path):
    with pytest.raises(LMControlError, match="no checkpoint"):
        train_loop(make_model(), loss_fn, batch_fn, CFG, tmp_path, resume=True)


SCRIPT = """
import hashlib, json, sys
import torch
sys.path.insert(0, {tests!r})
from test_training import make_model, loss_fn, batch_fn, CFG
from lmcontrol.training import train_loop
from accelerate import PartialState
out = sys.argv[1]
model = make_model()
train_loop(model, loss_fn, batch_fn, CFG, out)
st = PartialState()
h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
row = {{"rank": st.process_index, "world": st.num_processes, "hash": h}}
json.dump(row, open(f"{{out}}/rank{{st.process_index}}.json", "w"))
"""


@pytest.mark.slow  # starts two processes (~30 s)
@pytest.mark.skipif(
    shutil.which("accelerate") is None and not Path(sys.executable).with_name("accelerate").exists(),
    reason="accelerate CLI not installed",
)
def test_two_processes_identical_weights(tmp_path):
    """`accelerate launch` with 2 CPU processes: both take part (DDP over gloo) and end with identical weights.

    Accelerate's `--cpu` launcher only starts several processes through MPI; without MPI we use its torchrun
    launcher (`--multi_gpu`), and `Accelerator(cpu=True)` picks the gloo backend on a CPU-only machine.
    """
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        accelerate,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29517",
        str(script),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert {r["rank"] for r in ranks} == {0, 1} and all(r["world"] == 2 for r in ranks)
    assert ranks[0]["hash"] == ranks[1]["hash"]
