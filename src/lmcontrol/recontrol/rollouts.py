"""Rollouts of the base LM for RE-Control: responses, the edit-site state of every step, and a reward.

The state s_t (Kong et al. 2024, Sec. 3) is the hidden state at the edit site for the position that
produces token t+1: s_0 is the state of the last prompt token, s_{n-1} the state that produced the last
token (EOS when the row ended, else the last token before ``max_new_tokens``). They are recorded inside the
one generation loop by ``StateRecorder``, a control whose ``edit_hidden`` stores h (B, d) and returns it
unchanged, so the states are exactly the ones RE-Control later edits. Rows are indexed by the loop itself
(the new token's state of every row, whatever its left padding); a row stops contributing states after the
step it finished.

On disk (``out/``): ``shard_NNNNN.safetensors`` (``states`` (N, d) fp16, ``offsets`` (R+1,) int64) and a
``shard_NNNNN.json`` per shard (config, model, rows: prompt, response, n_states, rewards{name: value}). A
killed run resumes at the first missing shard. ``label_rollouts`` adds a reward to every row afterwards,
so rollouts can start before a reward model exists.

Prompt splits (``hh_prompt_split``): the distinct first human turns of an HH-RLHF subset, ordered by a
hash of their text; the first 300 are ``bench`` (never used for training), the next 100 ``val`` (for
choosing step size / steps), the rest ``train``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lmcontrol import LMControlError
from lmcontrol.controls import Control, StepContext
from lmcontrol.recontrol.config import RolloutConfig

log = logging.getLogger(__name__)

SPLIT_SIZES = {"bench": 300, "val": 100}
RewardFn = Callable[[list[str], list[str]], list[float]]


def hh_prompt_split(spec: str = "hh-rlhf:harmless-base", part: str = "train") -> list[str]:
    """Distinct first human turns of an HH-RLHF subset, in a fixed hash order, cut into train/val/bench."""
    from lmcontrol.data import load_dataset

    rows = load_dataset(spec)
    key = "first_human" if rows and "first_human" in rows[0] else "prompt"
    prompts = sorted(
        {str(r[key]).strip() for r in rows if str(r[key]).strip()},
        key=lambda p: hashlib.sha1(p.encode()).hexdigest(),
    )
    n_bench, n_val = SPLIT_SIZES["bench"], SPLIT_SIZES["val"]
    parts = {
        "bench": prompts[:n_bench],
        "val": prompts[n_bench : n_bench + n_val],
        "train": prompts[n_bench + n_val :],
    }
    if part not in parts:
        raise LMControlError(f"unknown prompt split '{part}' (known: {', '.join(parts)})")
    return parts[part]


class StateRecorder(Control):
    """Records the edit-site state of every row at every step; edits nothing.

    The engine calls a control only on the rows still running (a finished row leaves the batch and the others
    move slots), so states are kept by each row's position in the ``generate`` call (``ctx.rows.prompt_index``),
    not by its slot in the step's batch.
    """

    name = "record-states"

    def __init__(self, site: str = "final") -> None:
        self.hidden_site = site
        self.states: dict[int, list[torch.Tensor]] = {}  # call position -> per-step (d,) states

    def edit_hidden(self, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        kept = h.detach().to(torch.float16).cpu()
        for j, (index, done) in enumerate(zip(ctx.rows.prompt_index, ctx.finished.tolist(), strict=True)):
            if not done:
                self.states.setdefault(index, []).append(kept[j].clone())
        return h

    def per_row(self) -> list[torch.Tensor]:
        """States of each row of the call, (n_i, d), in step order; rows in call order."""
        return [torch.stack(self.states[i]) for i in sorted(self.states)]


@dataclasses.dataclass
class Rollouts:
    """All rollouts of a directory: flat states plus per-row offsets and metadata."""

    states: torch.Tensor  # (N, d) fp16
    offsets: torch.Tensor  # (R+1,) int64: row r owns states[offsets[r]:offsets[r+1]]
    rows: list[dict[str, Any]]
    meta: dict[str, Any]

    def rewards(self, name: str | None = None) -> torch.Tensor:
        """(R,) float rewards under ``name`` (default: the only / first one recorded)."""
        names = list(self.rows[0].get("rewards", {})) if self.rows else []
        if not names:
            raise LMControlError("rollouts carry no reward yet: run `label_rollouts` (or pass --reward)")
        name = name or names[0]
        if name not in names:
            raise LMControlError(f"rollouts have no reward '{name}' (have: {', '.join(names)})")
        missing = sum(name not in r.get("rewards", {}) for r in self.rows)
        if missing:
            raise LMControlError(f"{missing} of {len(self.rows)} rollouts have no reward '{name}' yet")
        return torch.tensor([float(r["rewards"][name]) for r in self.rows])


def _shard_paths(out: Path, i: int) -> tuple[Path, Path]:
    return out / f"shard_{i:05d}.safetensors", out / f"shard_{i:05d}.json"


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False))
    tmp.replace(path)


def collect_rollouts(
    lm: Any,
    prompts: list[str],
    out: str | Path,
    config: RolloutConfig = RolloutConfig(),
    reward: tuple[str, RewardFn] | None = None,
    shard_prompts: int = 64,
) -> Path:
    """Roll out the base LM on ``prompts`` (x ``config.samples``), store states + responses in shards.

    Args:
        lm: the ``LanguageModel``.
        prompts: user prompts (chat template applied by the generation loop).
        out: directory for the shards (resumes at the first missing shard).
        config: sampling settings and edit site.
        reward: optional ``(name, fn)`` to label responses right away.
        shard_prompts: prompts per shard (a shard is the unit of resume).
    """
    from lmcontrol.atomic import atomic_save_safetensors
    from lmcontrol.generation import GenerationConfig, generate

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    expanded = [p for p in prompts for _ in range(config.samples)]
    gen_cfg = GenerationConfig(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=config.seed,
        chat=True,
    )
    meta = {"config": dataclasses.asdict(config), "model": lm.info.name, "hidden_size": lm.info.hidden_size}
    n_shards = (len(expanded) + shard_prompts - 1) // shard_prompts
    for s in range(n_shards):
        st_path, js_path = _shard_paths(out, s)
        if st_path.is_file() and js_path.is_file():
            continue
        chunk = expanded[s * shard_prompts : (s + 1) * shard_prompts]
        rows: list[dict[str, Any]] = []
        states: list[torch.Tensor] = []
        for b in range(0, len(chunk), config.batch_size):
            batch = chunk[b : b + config.batch_size]
            recorder = StateRecorder(config.site)
            seed_cfg = dataclasses.replace(gen_cfg, seed=config.seed + s * 1000 + b)
            res = generate(lm, batch, seed_cfg, controls=[recorder])
            for prompt, text, row_states in zip(batch, res.texts, recorder.per_row(), strict=True):
                rows.append(
                    {"prompt": prompt, "response": text, "n_states": int(row_states.shape[0]), "rewards": {}}
                )
                states.append(row_states)
        if reward is not None:
            name, fn = reward
            for r, v in zip(
                rows, fn([r["prompt"] for r in rows], [r["response"] for r in rows]), strict=True
            ):
                r["rewards"][name] = float(v)
        lengths = torch.tensor([0] + [int(x.shape[0]) for x in states])
        atomic_save_safetensors({"states": torch.cat(states).contiguous(), "offsets": lengths.cumsum(0)}, st_path)
        _write_json(js_path, {**meta, "rows": rows})
        log.info("rollout shard %d/%d written (%d rows)", s + 1, n_shards, len(rows))
    return out


def load_rollouts(path: str | Path) -> Rollouts:
    """Read every shard of a rollout directory into one ``Rollouts``."""
    from safetensors.torch import load_file

    path = Path(path)
    shards = sorted(path.glob("shard_*.safetensors"))
    if not shards:
        raise LMControlError(f"no rollouts in {path} (expected shard_*.safetensors)")
    states, offsets, rows, meta, base = [], [torch.zeros(1, dtype=torch.long)], [], {}, 0
    for st in shards:
        js = st.with_suffix(".json")
        if not js.is_file():
            continue  # a shard being written
        tensors = load_file(str(st))
        info = json.loads(js.read_text())
        meta = {k: v for k, v in info.items() if k != "rows"}
        states.append(tensors["states"])
        offsets.append(tensors["offsets"][1:] + base)
        base += int(tensors["states"].shape[0])
        rows.extend(info["rows"])
    return Rollouts(torch.cat(states), torch.cat(offsets), rows, meta)


def label_rollouts(path: str | Path, name: str, fn: RewardFn, batch_size: int = 64) -> int:
    """Add reward ``name`` to every row of every shard that lacks it; returns the rows labelled."""
    done = 0
    for js in sorted(Path(path).glob("shard_*.json")):
        info = json.loads(js.read_text())
        todo = [r for r in info["rows"] if name not in r.get("rewards", {})]
        for i in range(0, len(todo), batch_size):
            part = todo[i : i + batch_size]
            for r, v in zip(
                part, fn([r["prompt"] for r in part], [r["response"] for r in part]), strict=True
            ):
                r.setdefault("rewards", {})[name] = float(v)
        if todo:
            _write_json(js, info)
            done += len(todo)
    return done
