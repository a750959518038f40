"""Issue 18: every bad input prints ONE line on stderr and exits 2 — no traceback, no file left behind.

One parametrised test per class of bad input (usage, input files, output paths, artifact configs, poisoned
tensors, the embedded-model cache, pickles, encoder redirects, resume state), plus hypothesis fuzzing of the
``--control`` grammar and the JSONL reader. Every case fails before any model loads unless it needs the tiny
model (``--model`` pointing at the ``tiny`` fixture saved as safetensors).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from lmcontrol import LMControlError
from lmcontrol.artifacts import (
    ArtifactError,
    PretrainedMixin,
    atomic_write_text,
    load_artifact,
    save_artifact,
    sweep_stale_temps,
)
from lmcontrol.cli.main import one_line


def assert_one_line(result: tuple[int, str, str], needle: str = "", strip: Path | None = None) -> str:
    """Exit 2, one ``error:`` line on stderr, no traceback; ``needle`` in it (outside the ``strip`` path)."""
    code, out, err = result
    assert code == 2, (code, out[-500:], err[-2000:])
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    assert needle in (lines[0].replace(str(strip), "<dir>") if strip else lines[0]), (needle, lines[0])
    return lines[0]


def leftovers(root: Path) -> list[Path]:
    """Temporary files a failed write must not leave behind."""
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".lmcontrol-write-probe")]


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a command loads a model before refusing its input."""
    import lmcontrol.models

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(lmcontrol.models, "load_lm", refuse)


@pytest.fixture(scope="session")
def tiny_dir(tiny, tmp_path_factory) -> Path:
    """The tiny test LM saved as an ordinary safetensors model directory (for ``--model DIR``)."""
    out = tmp_path_factory.mktemp("tiny-model")
    tiny.model.save_pretrained(out, safe_serialization=True)
    tiny.tokenizer.save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------------------
# 1. usage errors: typer's own click copy, flags the CLI checks before loading anything

USAGE = [
    ["generate", "--prompt", "hi", "--max-new-tokens", "1e9"],
    ["generate", "--prompt", "hi", "--max-new-tokens", "1000000000"],
    ["generate", "--prompt", "hi", "--max-new-tokens", "0"],
    ["generate", "--prompt", "hi", "--top-k", "abc"],
    ["generate", "--prompt", "hi", "--top-k", "-1"],
    ["generate", "--prompt", "hi", "--top-p", "0"],
    ["generate", "--prompt", "hi", "--temperature", "warm"],
    ["generate", "--prompt", "hi", "--temperature", "nan"],
    ["generate", "--prompt", "hi", "--temperature", "-1"],
    ["generate", "--prompt", "hi", "--batch-size", "0"],
    ["generate", "--prompt", "hi", "--stop", ""],
    ["generate", "--prompt", "hi", "--seed", "x"],
    ["generate", "--prompt", "hi", "--chat", "maybe"],
    ["generate", "--prompt", "hi", "--control", "nonsense:1"],
    ["generate", "--prompt", "hi", "--control", ""],
    ["generate", "--prompt", "hi", "--control", ":"],
    ["generate", "--prompt", "  "],
    ["generate", "--prompt", "hi", "--prefix-library", "/no/such/dir"],
    ["demo", "--max-new-tokens", "0"],
    ["generate", "--prompt"],
    ["generate", "--bogus"],
    ["generate"],
    ["generate", "--prompt", "hi", "--prompts", "x.jsonl"],
    ["eval"],
    ["eval", "x.jsonl", "--metrics", "nosuch"],
    ["nosuchcmd"],
    ["bench", "base", "--n", "abc"],
    ["bench", "base", "--n", "0"],
    ["bench", "base", "--max-new-tokens", "0"],
    ["bench", "base", "--methods", "nosuch"],
    ["bench", "nosuchsuite"],
    ["train", "nosuchmethod"],
]


@pytest.mark.parametrize("argv", USAGE, ids=lambda a: " ".join(a) or "empty")
def test_usage_errors(cli, no_model, argv):
    assert_one_line(cli(*argv))


def test_help_still_exits_0(cli):
    code, out, err = cli("--help")
    assert code == 0 and "generate" in out and not err.strip()
    code, out, _ = cli()
    assert code == 0 and "generate" in out  # no arguments: the help, not an error


# ---------------------------------------------------------------------------------------------------------
# 2. input files: hostile JSONL, wrong field types


def _deep(n: int) -> str:
    return '{"prompt": "hi", "x": ' + "[" * n + "]" * n + "}"


INPUT_FILES = {
    # name: (file suffix, content, command, needle)
    "nested-200k": (".jsonl", _deep(200_000), "generate", "nested deeper"),
    "nested-100": (".jsonl", _deep(100), "generate", "nested deeper"),
    "5000-digit-int": (".jsonl", '{"prompt": "hi", "n": ' + "9" * 5000 + "}", "generate", "not valid JSON"),
    "nan-literal": (".jsonl", '{"prompt": NaN}', "generate", "not valid JSON"),
    "syntax": (".jsonl", '{"prompt": "hi"}\n{oops\n', "generate", "line 2"),
    "trailing-garbage": (".jsonl", '{"prompt": "hi"} x', "generate", "not valid JSON"),
    "not-utf8": (".jsonl", b'\xff\xfe{"prompt": "hi"}', "generate", "could not read"),
    "row-is-list": (".jsonl", "[1, 2]", "generate", "not an object"),
    "prompt-null": (".jsonl", '{"prompt": null}', "generate", "'prompt' must be a string, got null"),
    "prompt-int": (".jsonl", '{"prompt": 12}', "generate", "'prompt' must be a string, got int"),
    "prompt-list": (".jsonl", '{"prompt": ["a"]}', "generate", "'prompt' must be a string"),
    "prompt-empty": (".jsonl", '{"prompt": " "}', "generate", "empty prompt"),
    "prompt-missing": (".jsonl", '{"text": "hi"}', "generate", "no 'prompt'"),
    "prefix-list": (".jsonl", '{"prompt": "hi", "prefix": ["a"]}', "generate", "'prefix' must be"),
    "prefix-null": (".jsonl", '{"prompt": "hi", "prefix": null}', "generate", "'prefix' must be"),
    "empty-file": (".jsonl", "", "generate", "empty"),
    "blank-lines": (".jsonl", "\n \n", "generate", "empty"),
    "json-dict": (".json", '{"prompt": "hi"}', "generate", "list of objects"),
    "csv-huge-field": (".csv", 'prompt\n"' + "a" * 200_000 + '"\n', "generate", "could not read"),
    "eval-seconds-str": (".jsonl", '{"prompt": "p", "continuation": "c", "seconds": "abc"}', "eval", "seconds"),
    "eval-seconds-neg": (".jsonl", '{"prompt": "p", "continuation": "c", "seconds": -1}', "eval", "seconds"),
    "eval-reference-int": (".jsonl", '{"prompt": "p", "continuation": "c", "reference": 5}', "eval", "reference"),
    "eval-references-mixed": (
        ".jsonl",
        '{"prompt": "p", "continuation": "c", "references": ["a", 1]}',
        "eval",
        "references",
    ),
    "eval-tokens-str": (".jsonl", '{"prompt": "p", "continuation": "c", "tokens": "x"}', "eval", "tokens"),
    "eval-method-int": (".jsonl", '{"prompt": "p", "continuation": "c", "method": 3}', "eval", "method"),
    "eval-seconds-inf-str": (".jsonl", '{"prompt": "p", "continuation": "c", "seconds": "inf"}', "eval", "seconds"),
    "eval-tokens-float": (".jsonl", '{"prompt": "p", "continuation": "c", "tokens": 1.5}', "eval", "tokens"),
    "eval-continuation-null": (".jsonl", '{"prompt": "p", "continuation": null}', "eval", "continuation"),
    "eval-deep": (".jsonl", _deep(200_000), "eval", "nested deeper"),
    "bench-prompt-int": (".jsonl", '{"prompt": 12}', "bench", "prompt"),
    "bench-reference-int": (".jsonl", '{"prompt": "hi", "reference": 5}', "bench", "reference"),
}


@pytest.mark.parametrize("name", list(INPUT_FILES))
def test_input_files(cli, no_model, tmp_path, name):
    suffix, content, command, needle = INPUT_FILES[name]
    src = tmp_path / f"in{suffix}"
    if isinstance(content, bytes):
        src.write_bytes(content)
    else:
        src.write_text(content)
    out = tmp_path / "out"
    if command == "generate":
        argv = ["generate", "--prompts", str(src), "--output", str(out / "o.jsonl")]
    elif command == "eval":
        argv = ["eval", str(src), "--metrics", "dist,timing", "--output", str(out / "r.json")]
    else:
        argv = ["bench", "base", "--prompts", str(src), "--out", str(out)]
    assert_one_line(cli(*argv), needle, strip=tmp_path)
    assert not out.exists() and not leftovers(tmp_path)


def test_prompts_path_is_a_directory(cli, no_model, tmp_path):
    assert_one_line(cli("generate", "--prompts", str(tmp_path)), "not found")


# ---------------------------------------------------------------------------------------------------------
# 3. output paths: checked before any work, never a temp file left behind


def _unwritable(tmp_path: Path) -> Path:
    target = Path("/proc/lmcontrol-test-output")
    try:
        fd, probe = tempfile.mkstemp(dir="/proc")
    except OSError:
        return target
    os.close(fd)
    os.unlink(probe)
    pytest.skip("/proc is writable here")


OUTPUTS = {
    "generate-output-is-dir": lambda d, src: ["generate", "--prompt", "hi", "--output", str(d)],
    "generate-parent-is-file": lambda d, src: ["generate", "--prompt", "hi", "--output", str(src / "o.jsonl")],
    "generate-unwritable": lambda d, src: ["generate", "--prompt", "hi", "--output", str(_unwritable(d) / "o")],
    "bench-out-is-file": lambda d, src: ["bench", "base", "--out", str(src)],
    "bench-out-under-file": lambda d, src: ["bench", "base", "--out", str(src / "run")],
    "bench-unwritable": lambda d, src: ["bench", "base", "--out", str(_unwritable(d))],
    "eval-output-is-dir": lambda d, src: ["eval", str(src), "--metrics", "dist", "--output", str(d)],
    "eval-unwritable": lambda d, src: ["eval", str(src), "--metrics", "dist", "--output", str(_unwritable(d))],
}


@pytest.mark.parametrize("name", list(OUTPUTS))
def test_output_paths(cli, no_model, tmp_path, name):
    src = tmp_path / "rows.jsonl"
    src.write_text('{"prompt": "p", "continuation": "a b c"}\n')
    before = sorted(tmp_path.rglob("*"))
    assert_one_line(cli(*OUTPUTS[name](tmp_path, src)))
    assert sorted(tmp_path.rglob("*")) == before


def test_atomic_write_keeps_old_content_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic_write_text(target, "old")
    with pytest.raises(LMControlError, match="cannot write"):
        atomic_write_text(tmp_path, "x")  # a directory in the way
    real_replace = os.replace

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(LMControlError, match="No space left"):
        atomic_write_text(target, "new")
    monkeypatch.setattr(os, "replace", real_replace)
    assert target.read_text() == "old" and not leftovers(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# 4. corrupt artifact configs: one pydantic schema on load


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    dim: int = 8
    encoder: str = "all-MiniLM-L6-v2"


class Head(PretrainedMixin, nn.Module):
    """A toy head."""

    artifact_kind = "test.head"
    config_class = HeadConfig

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.dim, 1)


def _set(path: str, value):
    def mutate(cfg: dict) -> None:
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return mutate


_DELETE = object()
CONFIG_MUTATIONS = {
    "format_version-str": _set("format_version", "abc"),
    "format_version-null": _set("format_version", None),
    "format_version-float": _set("format_version", 1.5),
    "hidden_size-str": _set("hidden_size", "abc"),
    "hidden_size-negative": _set("hidden_size", -1),
    "hidden_size-bool": _set("hidden_size", True),
    "config-str": _set("config", "oops"),
    "config-null": _set("config", None),
    "config-list": _set("config", [1]),
    "extra-list": _set("extra", []),
    "extra-step_size-str": _set("extra", {"step_size": "abc"}),
    "extra-step_size-zero": _set("extra", {"step_size": 0}),
    "extra-steps-str": _set("extra", {"steps": "x"}),
    "extra-prompt_name-traversal": _set("extra", {"prompt_name": "../../../etc/passwd"}),
    "extra-vocab-ints": _set("extra", {"vocab": [1, 2]}),
    "missing-base_model": _set("base_model", _DELETE),
    "missing-hidden_size": _set("hidden_size", _DELETE),
    "missing-kind": _set("kind", _DELETE),
    "kind-int": _set("kind", 5),
    "metrics-list": _set("metrics", [1]),
    "sha256-not-hex": _set("weights_sha256", "zz"),
    "method-config-dim-str": _set("config.dim", "abc"),
    "method-config-dim-list": _set("config.dim", [8]),
}
RAW_CONFIGS = {
    "not-json": "{broken",
    "json-list": "[]",
    "json-null": "null",
    "nan-literal": '{"kind": NaN}',
    "deep": '{"kind": "test.head", "config": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "empty": "",
    "huge": '{"kind": "test.head", "pad": "' + "x" * (17 * 1024 * 1024) + '"}',
}


@pytest.mark.parametrize("name", list(CONFIG_MUTATIONS) + [f"raw-{k}" for k in RAW_CONFIGS])
def test_corrupt_artifact_config(tmp_path, name):
    path = Head(HeadConfig()).save_pretrained(tmp_path / "a", base_model="m", hidden_size=8)
    cfg_path = path / "config.json"
    if name.startswith("raw-"):
        cfg_path.write_text(RAW_CONFIGS[name[4:]])
    else:
        cfg = json.loads(cfg_path.read_text())
        CONFIG_MUTATIONS[name](cfg)
        cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError) as e:
        Head.from_pretrained(path)
    msg = str(e.value)
    assert msg.startswith(f"corrupt artifact: {path}: ") and "\n" not in msg, msg


def test_newer_format_is_not_called_corrupt(tmp_path):
    path = Head(HeadConfig()).save_pretrained(tmp_path / "a", base_model="m", hidden_size=8)
    cfg = json.loads((path / "config.json").read_text())
    cfg["format_version"] = 99
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="format version 99"):
        Head.from_pretrained(path)


def test_corrupt_artifact_from_the_cli(cli, tiny_dir, tmp_path):
    from lmcontrol.recontrol.config import ValueNetworkConfig
    from lmcontrol.recontrol.model import ValueNetwork

    net = ValueNetwork(ValueNetworkConfig(hidden_size=32, width=8, depth=2))
    path = net.save_pretrained(tmp_path / "v", base_model=f"{tiny_dir}", hidden_size=32)
    cfg = json.loads((path / "config.json").read_text())
    cfg["extra"] = {"step_size": "abc"}
    (path / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "o.jsonl"
    argv = ["generate", "--prompt", "hi", "--model", str(tiny_dir), "--control", f"recontrol:{path}", "-o", str(out)]
    assert_one_line(cli(*argv), "corrupt artifact")
    assert not out.exists() and not leftovers(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# 5. poisoned tensors: non-finite or non-float refused with the tensor's name; the sha256 catches edits


def _poison(path: Path, name: str, tensor: torch.Tensor, keep_sha: bool = False) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / "model.safetensors"))
    tensors[name] = tensor
    save_file(tensors, str(path / "model.safetensors"))
    if not keep_sha:  # an attacker who edits the weights can drop (or recompute) the checksum too
        cfg = json.loads((path / "config.json").read_text())
        cfg.pop("weights_sha256", None)
        (path / "config.json").write_text(json.dumps(cfg))


POISON = {
    "nan": ("linear.weight", torch.full((1, 8), float("nan")).half(), False, "non-finite"),
    "inf": ("linear.bias", torch.tensor([float("inf")]), False, "non-finite"),
    "one-nan": ("linear.weight", torch.tensor([[0.0] * 7 + [float("nan")]]), False, "1 non-finite"),
    "int64": ("linear.weight", torch.ones(1, 8, dtype=torch.int64), False, "int64"),
    "bool": ("linear.bias", torch.ones(1, dtype=torch.bool), False, "bool"),
    "edited-with-sha": ("linear.weight", torch.zeros(1, 8).half(), True, "sha256"),
}


@pytest.mark.parametrize("name", list(POISON))
def test_poisoned_tensors(tmp_path, name):
    tensor_name, tensor, keep_sha, needle = POISON[name]
    path = Head(HeadConfig()).save_pretrained(tmp_path / "a", base_model="m", hidden_size=8)
    _poison(path, tensor_name, tensor, keep_sha)
    with pytest.raises(ArtifactError) as e:
        Head.from_pretrained(path)
    msg = str(e.value)
    assert msg.startswith("corrupt artifact:") and needle in msg, msg
    if not keep_sha:
        assert tensor_name in msg


@pytest.mark.parametrize("cut", [0, 7, 100])
def test_truncated_weights(tmp_path, cut):
    path = Head(HeadConfig()).save_pretrained(tmp_path / "a", base_model="m", hidden_size=8)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[:cut])
    with pytest.raises(ArtifactError, match="corrupt artifact: .*sha256"):
        load_artifact(path)
    cfg = json.loads((path / "config.json").read_text())
    del cfg["weights_sha256"]  # an artifact from before checksums: the reader itself must refuse
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="corrupt artifact: .*cannot read"):
        load_artifact(path)


def test_saving_refuses_non_finite_and_keeps_large_values(tmp_path):
    with pytest.raises(ArtifactError, match="non-finite"):
        save_artifact(tmp_path / "x", kind="k", tensors={"w": torch.tensor([float("nan")])}, base_model=None,
                      hidden_size=None)
    assert not (tmp_path / "x").exists() and not leftovers(tmp_path)
    save_artifact(tmp_path / "y", kind="k", tensors={"w": torch.tensor([1e6])}, base_model=None, hidden_size=None)
    _, tensors = load_artifact(tmp_path / "y")  # would be inf in fp16
    assert tensors["w"].item() == 1e6


def test_poisoned_value_net_from_the_cli(cli, tiny_dir, tmp_path):
    from lmcontrol.recontrol.config import ValueNetworkConfig
    from lmcontrol.recontrol.model import ValueNetwork

    net = ValueNetwork(ValueNetworkConfig(hidden_size=32, width=8, depth=2))
    path = net.save_pretrained(tmp_path / "v", base_model=str(tiny_dir), hidden_size=32)
    name = next(k for k in net.state_dict() if k.endswith("weight"))
    _poison(path, name, torch.full_like(net.state_dict()[name], float("nan")))
    for sampling in ([], ["--temperature", "0.9"]):
        argv = ["generate", "--prompt", "hi", "--model", str(tiny_dir), "-c", f"recontrol:{path}", *sampling]
        assert name in assert_one_line(cli(*argv), "non-finite")


# ---------------------------------------------------------------------------------------------------------
# 6. the embedded-model cache: verified against its manifest, rebuilt when bad, stale temps swept


@pytest.fixture
def fake_cache(tiny_dir, tmp_path, monkeypatch):
    """An embedded-model cache under tmp_path whose 'conversion' copies the tiny model (counts the calls)."""
    import lmcontrol.models as models

    monkeypatch.setenv("LMCONTROL_CACHE", str(tmp_path / "cache"))
    calls = []

    def convert(out: Path) -> None:
        calls.append(out)
        for f in tiny_dir.iterdir():
            shutil.copy(f, out / f.name)

    monkeypatch.setattr(models, "_convert_gguf", convert)
    monkeypatch.setattr(models, "_verified", set())
    path = models.ensure_embedded_checkpoint()
    assert len(calls) == 1 and models.verify_cache(path) is None
    return path, calls


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _ff(p: Path) -> None:
    p.write_bytes(b"\xff" * p.stat().st_size)


CACHE_DAMAGE = {
    "truncated-weights": lambda d: _truncate(d / "model.safetensors"),
    "weights-0xff": lambda d: _ff(d / "model.safetensors"),
    "invalid-config": lambda d: (d / "config.json").write_text("{"),
    "tokenizer-deleted": lambda d: (d / "tokenizer.json").unlink(),
    "tokenizer-config-deleted": lambda d: (d / "tokenizer_config.json").unlink(),
    "manifest-deleted": lambda d: (d / "lmcontrol-cache.json").unlink(),
    "manifest-garbage": lambda d: (d / "lmcontrol-cache.json").write_text("[]"),
}


@pytest.mark.parametrize("name", list(CACHE_DAMAGE))
def test_bad_cache_is_rebuilt(fake_cache, monkeypatch, name):
    import lmcontrol.models as models

    path, calls = fake_cache
    CACHE_DAMAGE[name](path)
    monkeypatch.setattr(models, "_verified", set())  # a new process
    assert models.verify_cache(path) is not None
    assert models.ensure_embedded_checkpoint() == path
    assert len(calls) == 2 and models.verify_cache(path) is None
    assert not leftovers(path.parent)


def test_stale_temps_are_swept(fake_cache, tmp_path):
    import lmcontrol.models as models

    path, _ = fake_cache
    dead = path.parent / f".{path.name}.999999999.abc.tmp"  # a killed conversion (no such PID)
    legacy = path.parent / f".{path.name}.k3j_x9q.tmp"  # the old layout, without a PID
    live = path.parent / f".{path.name}.{os.getppid()}.xyz.tmp"  # another process still converting
    for d in (dead, legacy, live):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"0" * 10)
    os.utime(legacy, (0, 0))
    models.ensure_embedded_checkpoint()
    assert not dead.exists() and not legacy.exists() and live.exists()
    assert sweep_stale_temps(path.parent, max_age_seconds=0) == 1 and not live.exists()


# ---------------------------------------------------------------------------------------------------------
# 7. pickle: never loaded, refused in one line


class _Boom:
    """Unpickling this writes a marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def _malicious_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(_Boom(marker)))


def test_pickle_only_model_dir(cli, tiny_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    (d / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    _malicious_pickle(d / "pytorch_model.bin", marker)
    assert_one_line(cli("generate", "--prompt", "hi", "--model", str(d)), "refusing pickle weights")
    assert not marker.exists()


def test_safetensors_win_over_a_pickle(tiny_dir, tmp_path):
    from lmcontrol.models import load_lm

    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    marker = tmp_path / "pwned"
    _malicious_pickle(d / "pytorch_model.bin", marker)
    lm = load_lm(str(d))
    assert lm.info.hidden_size == 32 and not marker.exists()


def test_pickle_only_reward_and_encoder(tmp_path):
    from lmcontrol.eval.reward import load_reward
    from lmcontrol.models import load_encoder

    marker = tmp_path / "pwned"
    d = tmp_path / "enc"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "bert"}')
    _malicious_pickle(d / "pytorch_model.bin", marker)
    with pytest.raises(LMControlError, match="refusing pickle weights"):
        load_encoder(str(d))
    reward = load_reward(f"hf:{d}")
    with pytest.raises(LMControlError, match="refusing pickle weights"):
        reward(["p"], ["r"])
    (d / "pytorch_model.bin").unlink()
    (d / "model.safetensors").write_bytes(b"")
    (d / "2_Dense").mkdir()  # a sentence-transformers module whose weights are only a pickle
    _malicious_pickle(d / "2_Dense" / "pytorch_model.bin", marker)
    with pytest.raises(LMControlError, match="refusing pickle weights"):
        load_encoder(str(d))
    assert not marker.exists()


def test_server_can_refuse_python_rewards():
    from lmcontrol.eval.reward import load_reward

    with pytest.raises(LMControlError, match="refused"):
        load_reward("py:os:getcwd", allow_python=False)


# ---------------------------------------------------------------------------------------------------------
# 8. a config cannot redirect loading to an arbitrary directory


@pytest.mark.parametrize("encoder", ["/etc", "/tmp", "../..", "..", "sub/../../x", "some-org/some-model", ""])
def test_config_named_encoder_is_restricted(tmp_path, encoder):
    path = Head(HeadConfig()).save_pretrained(tmp_path / "a", base_model="m", hidden_size=8)
    cfg = json.loads((path / "config.json").read_text())
    cfg["config"]["encoder"] = encoder
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="corrupt artifact: .*encoder"):
        Head.from_pretrained(path)


def test_encoder_inside_the_artifact_or_trusted(tmp_path, monkeypatch):
    path = Head(HeadConfig()).save_pretrained(tmp_path / "a", base_model="m", hidden_size=8)
    (path / "enc").mkdir()
    cfg = json.loads((path / "config.json").read_text())
    cfg["config"]["encoder"] = "enc"
    (path / "config.json").write_text(json.dumps(cfg))
    assert Head.from_pretrained(path).config.encoder == str((path / "enc").resolve())
    cfg["config"]["encoder"] = "/opt/my-encoder"
    (path / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("LMCONTROL_TRUSTED_ENCODERS", "x, /opt/my-encoder")
    assert Head.from_pretrained(path).config.encoder == "/opt/my-encoder"


def test_committed_artifacts_still_load():
    from lmcontrol.artifacts import read_meta
    from lmcontrol.settings import ARTIFACTS_DIR

    metas = [read_meta(p.parent) for p in sorted(ARTIFACTS_DIR.rglob("config.json")) if "checkpoint" not in p.parts]
    assert metas and all(m.kind for m in metas)


# ---------------------------------------------------------------------------------------------------------
# 9. resume: another architecture, truncated checkpoints, invalid state.json; losses equal an uninterrupted run


def _net(width: int = 8, dropout: float = 0.3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, width), nn.Dropout(dropout), nn.Tanh(), nn.Linear(width, 1))


def _batch(step, rank, world):
    from lmcontrol.training import step_generator

    x = torch.randn(16, 4, generator=step_generator(0, step, rank))
    return x, x.sum(-1, keepdim=True)


def _loss(m, b):
    return ((m(b[0]) - b[1]) ** 2).mean()


def _train(out: Path, model: nn.Module | None = None, resume: bool = False, die_at: int | None = None):
    from lmcontrol.training import TrainConfig, train_loop

    def batch(step, rank, world):
        if step == die_at:
            raise KeyboardInterrupt
        return _batch(step, rank, world)

    cfg = TrainConfig(steps=24, lr=1e-2, checkpoint_every=7, log_every=5, progress=False)
    return train_loop(model or _net(), _loss, batch, cfg, out, resume=resume)


def test_resumed_losses_equal_an_uninterrupted_run(tmp_path):
    full_model = _net()
    full = _train(tmp_path / "full", full_model)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "part", die_at=17)  # last checkpoint at step 14, mid log interval, with dropout
    resumed_model = _net()
    resumed = _train(tmp_path / "part", resumed_model, resume=True)
    assert resumed.resumed_from == 14
    assert resumed.losses == full.losses and resumed.final_loss == full.final_loss
    for a, b in zip(full_model.parameters(), resumed_model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def _state(ck: Path, fn) -> None:
    state = json.loads((ck / "state.json").read_text())
    fn(state)
    (ck / "state.json").write_text(json.dumps(state))


RESUME_DAMAGE = {
    "other-architecture": (lambda ck: None, lambda: _net(width=16), "different model architecture"),
    "other-layers": (lambda ck: None, lambda: nn.Sequential(nn.Linear(4, 1)), "different model architecture"),
    "truncated-weights": (lambda ck: _truncate(ck / "weights.safetensors"), _net, "sha256"),
    "truncated-optimizer": (lambda ck: _truncate(ck / "optimizer.safetensors"), _net, "sha256"),
    "truncated-no-sha": (
        lambda ck: (_truncate(ck / "weights.safetensors"), _state(ck, lambda s: s.pop("sha256"))),
        _net,
        "cannot read",
    ),
    "weights-deleted": (lambda ck: (ck / "weights.safetensors").unlink(), _net, "missing"),
    "state-not-json": (lambda ck: (ck / "state.json").write_text("{"), _net, "state.json"),
    "state-list": (lambda ck: (ck / "state.json").write_text("[]"), _net, "state.json"),
    "state-step-str": (lambda ck: _state(ck, lambda s: s.update(step="abc")), _net, "step"),
    "state-step-negative": (lambda ck: _state(ck, lambda s: s.update(step=-3)), _net, "step"),
    "state-step-past-end": (lambda ck: _state(ck, lambda s: s.update(step=10_000)), _net, "past --steps"),
    "state-losses-str": (lambda ck: _state(ck, lambda s: s.update(losses="x")), _net, "losses"),
    "state-no-optimizer": (lambda ck: _state(ck, lambda s: s.pop("optimizer")), _net, "optimizer"),
    "state-bad-optimizer": (
        lambda ck: _state(ck, lambda s: s.update(optimizer={"param_groups": [], "scalars": {}})),
        _net,
        "optimizer",
    ),
    "state-bad-rng": (lambda ck: _state(ck, lambda s: s.update(rng={"torch": "!!"})), _net, "rng"),
}


def test_training_out_dir_checked_before_training(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LMControlError, match="--out .* is a file"):
        _train(tmp_path / "file")


@pytest.mark.parametrize("name", list(RESUME_DAMAGE))
def test_bad_resume(tmp_path, name):
    damage, model, needle = RESUME_DAMAGE[name]
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, die_at=10)
    damage(tmp_path / "checkpoint")
    with pytest.raises(LMControlError) as e:
        _train(tmp_path, model(), resume=True)
    msg = str(e.value)
    assert msg.startswith("--resume: ") and needle in msg and "\n" not in msg, msg


# ---------------------------------------------------------------------------------------------------------
# fuzzing: the --control grammar and the JSONL reader never raise anything but a one-line LMControlError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.text(max_size=80) | st.from_regex(r"[a-z-]{0,8}(:[^,]{0,6}(,[a-z_]{0,6}=?[^,]{0,8}){0,4})?", fullmatch=True))
def test_fuzz_control_spec(text):
    from lmcontrol.controls import parse_control_spec
    from lmcontrol.registry import control_entry

    # Only LMControlError may escape (the CLI folds its message onto one line: a spec may contain newlines).
    try:
        spec = parse_control_spec(text)
        for key, _ in spec.options:
            for read in (spec.float, spec.int):
                try:
                    read(key, 0)
                except LMControlError as e:
                    assert one_line(str(e))
        control_entry(spec.kind)
    except LMControlError as e:
        assert one_line(str(e))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(st.lists(JSON_VALUES, max_size=4))
def test_fuzz_jsonl_roundtrip_and_prompt_rows(values):
    from lmcontrol.cli.generate_cmd import read_prompt_rows
    from lmcontrol.data import load_file

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rows.jsonl"
        path.write_text("".join(json.dumps(v) + "\n" for v in values))
        try:
            rows = load_file(path)
        except LMControlError:
            assert not all(isinstance(v, dict) for v in values)
            return
        assert rows == values  # what was written comes back unchanged
        try:
            read_prompt_rows(path)
        except LMControlError as e:
            assert "\n" not in str(e)


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_fuzz_jsonl_bytes(data):
    from lmcontrol.data import load_file

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rows.jsonl"
        path.write_bytes(data)
        try:
            rows = load_file(path)
        except LMControlError as e:
            assert "\n" not in str(e)
            return
        assert all(isinstance(r, dict) for r in rows)


HOSTILE_LINES = st.one_of(
    st.integers(0, 300_000).map(lambda n: '{"prompt": "p", "x": ' + "[" * n + "]" * n + "}"),
    st.integers(0, 20_000).map(lambda n: '{"prompt": "p", "n": 1' + "0" * n + "}"),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "null", "[]", '""', "{}", '{"prompt": 1}']),
    st.integers(0, 300_000).map(lambda n: '{"prompt": ' + '{"a": ' * n + "1" + "}" * n + "}"),
)


@FUZZ
@given(st.lists(HOSTILE_LINES, min_size=1, max_size=3))
def test_fuzz_hostile_jsonl(lines):
    from lmcontrol.cli.generate_cmd import read_prompt_rows

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rows.jsonl"
        path.write_text("\n".join(lines) + "\n")
        try:
            read_prompt_rows(path)
        except LMControlError as e:
            assert "\n" not in str(e)
