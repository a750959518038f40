"""The save_pretrained / from_pretrained contract: atomic writes, fp16, provenance, refusal of mismatches."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from lmcontrol.artifacts import ArtifactError, PretrainedMixin, load_artifact, read_meta, save_artifact


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    dim: int = 8
    out: int = 1


class Head(PretrainedMixin, nn.Module):
    """A toy head."""

    artifact_kind = "test.head"
    config_class = HeadConfig

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.dim, config.out)


def test_roundtrip_fp16_and_card(tmp_path):
    head = Head(HeadConfig(dim=8))
    out = head.save_pretrained(
        tmp_path / "a", base_model="m", hidden_size=8, metrics={"acc": 0.9}, command="lmcontrol x"
    )
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    meta = read_meta(out)
    assert meta.kind == "test.head" and meta.base_model == "m" and meta.hidden_size == 8
    assert meta.command == "lmcontrol x" and meta.metrics == {"acc": 0.9}
    card = (out / "README.md").read_text()
    assert "lmcontrol x" in card and "acc" in card
    _, tensors = load_artifact(out)
    assert tensors["linear.weight"].dtype == torch.float32  # fp16 on disk, float32 in memory
    loaded = Head.from_pretrained(out, model_name="m", hidden_size=8)
    torch.testing.assert_close(loaded.linear.weight, head.linear.weight.half().float())
    assert loaded.config == head.config


def test_mismatch_refused_with_names(tmp_path):
    Head(HeadConfig()).save_pretrained(tmp_path / "a", base_model="model-a", hidden_size=8)
    with pytest.raises(ArtifactError) as e:
        Head.from_pretrained(tmp_path / "a", model_name="model-b", hidden_size=16)
    msg = str(e.value)
    assert "model-a" in msg and "model-b" in msg and "hidden size 8 != 16" in msg and str(tmp_path / "a") in msg


def test_wrong_kind_and_corrupt(tmp_path):
    save_artifact(tmp_path / "x", kind="other", tensors={"w": torch.zeros(2)}, base_model=None, hidden_size=None)
    with pytest.raises(ArtifactError, match="is a 'other'"):
        Head.from_pretrained(tmp_path / "x")
    with pytest.raises(ArtifactError, match="not found"):
        Head.from_pretrained(tmp_path / "missing")
    Head(HeadConfig()).save_pretrained(tmp_path / "c", base_model="m", hidden_size=8)
    (tmp_path / "c" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="corrupt"):
        Head.from_pretrained(tmp_path / "c")
    (tmp_path / "c" / "config.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt"):
        Head.from_pretrained(tmp_path / "c")


def test_shape_mismatch_is_one_line(tmp_path):
    Head(HeadConfig(dim=8)).save_pretrained(tmp_path / "a", base_model="m", hidden_size=8)
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    cfg["config"]["dim"] = 4
    (tmp_path / "a" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError) as e:
        Head.from_pretrained(tmp_path / "a")
    assert "\n" not in str(e.value)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    class Boom(dict):
        def items(self):
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        save_artifact(tmp_path / "a", kind="k", tensors=Boom(), base_model=None, hidden_size=None)
    assert list(tmp_path.iterdir()) == []
    # an existing artifact survives a failed overwrite
    save_artifact(tmp_path / "a", kind="k", tensors={"w": torch.ones(1)}, base_model=None, hidden_size=None)
    with pytest.raises(RuntimeError):
        save_artifact(tmp_path / "a", kind="k", tensors=Boom(), base_model=None, hidden_size=None)
    assert read_meta(tmp_path / "a").kind == "k"
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_saving_the_final_artifact_keeps_the_training_checkpoint(tmp_path):
    """A trainer writes OUT/checkpoint, then the artifact into OUT: the checkpoint must survive (for --resume)."""
    from lmcontrol.training import TrainConfig, train_loop

    head = Head(HeadConfig(dim=4))
    x = torch.randn(16, 4)

    def loss_fn(m, b):
        return (m.linear(b) ** 2).mean()

    cfg = TrainConfig(steps=4, checkpoint_every=2, progress=False)
    train_loop(head, loss_fn, lambda step, rank, world: x, cfg, tmp_path / "out")
    head.save_pretrained(tmp_path / "out", base_model="m", hidden_size=4)
    assert (tmp_path / "out" / "checkpoint" / "state.json").is_file()
    res = train_loop(
        Head(HeadConfig(dim=4)),
        loss_fn,
        lambda s, r, w: x,
        dataclasses.replace(cfg, steps=6),
        tmp_path / "out",
        resume=True,
    )
    assert res.resumed_from == 4
    assert read_meta(tmp_path / "out").kind == "test.head"


def test_no_pickle_anywhere():
    """Nothing in the package may unpickle (torch.load / pickle.load)."""
    from pathlib import Path

    import lmcontrol

    root = Path(lmcontrol.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if any(s in p.read_text() for s in ("torch.load(", "pickle.load", "pickle.loads", "joblib.load"))
    ]
    assert offenders == []


def test_checksum_written_and_verified(tmp_path):
    from lmcontrol.artifacts import sha256_file

    out = Head(HeadConfig()).save_pretrained(tmp_path / "a", base_model="m", hidden_size=8)
    meta = read_meta(out)
    assert meta.weights_sha256 == sha256_file(out / "model.safetensors")
    assert "weights_sha256" in json.loads((out / "config.json").read_text())


def test_atomic_json_and_output_checks(tmp_path):
    from lmcontrol import LMControlError
    from lmcontrol.artifacts import atomic_write_json, check_output_path

    atomic_write_json(tmp_path / "deep" / "r.json", {"a": (1, 2), "p": tmp_path})
    assert json.loads((tmp_path / "deep" / "r.json").read_text()) == {"a": [1, 2], "p": str(tmp_path)}
    check_output_path(tmp_path / "new" / "dir" / "o.jsonl")  # a new path is fine and creates nothing
    assert not (tmp_path / "new").exists()
    with pytest.raises(LMControlError, match="is a directory"):
        check_output_path(tmp_path / "deep")
    with pytest.raises(LMControlError, match="is a file"):
        check_output_path(tmp_path / "deep" / "r.json", directory=True)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "r.json"]


def test_written_files_get_the_permissions_of_a_plain_write(tmp_path):
    """Atomic writes go through mkstemp/mkdtemp/safetensors (0600/0700); what is renamed into place must be
    readable like any file the user writes (the umask applied), or a shared artifact is private to its writer."""
    import os
    import stat

    from lmcontrol.atomic import atomic_save_safetensors, atomic_write_text, current_umask

    mask = current_umask()
    assert mask == os.umask(mask)  # read without changing it
    out = Head(HeadConfig()).save_pretrained(tmp_path / "a", base_model="m", hidden_size=8)
    text = atomic_write_text(tmp_path / "t.txt", "hi")
    st = atomic_save_safetensors({"x": torch.zeros(2)}, tmp_path / "x.safetensors")
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask
    assert {stat.S_IMODE(p.stat().st_mode) for p in [*out.iterdir(), text, st]} == {0o666 & ~mask}


def test_extra_files_beside_the_weights_are_checksummed(tmp_path):
    from lmcontrol.artifacts import read_artifact_file

    out = Head(HeadConfig()).save_pretrained(
        tmp_path / "a", base_model="m", hidden_size=8, files={"vocab.json": '["a", "b"]'}, extra={"n": list(range(99))}
    )
    assert (out / "vocab.json").read_text() == '["a", "b"]'
    assert read_artifact_file(out, "vocab.json") == '["a", "b"]' and read_artifact_file(out, "other.txt") is None
    card = (out / "README.md").read_text()
    assert "`vocab.json`" in card and "(99 items; all in config.json)" in card and "98" not in card
    (out / "vocab.json").write_text('["a", "c"]')
    with pytest.raises(ArtifactError, match="vocab.json does not match the sha256"):
        read_artifact_file(out, "vocab.json")
    (out / "vocab.json").unlink()
    with pytest.raises(ArtifactError, match="vocab.json is missing"):
        read_artifact_file(out, "vocab.json")
    for bad in ("../x", "config.json", ".hidden"):
        with pytest.raises(ArtifactError, match="bad extra file name"):
            Head(HeadConfig()).save_pretrained(tmp_path / "b", base_model="m", hidden_size=8, files={bad: "x"})
