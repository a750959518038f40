"""CLI behaviour: reproducible output, and one clear line + exit 2 for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

PROMPT = "Write one sentence about the sea."


def assert_one_line_error(code, out, err, needle):
    assert code == 2, (code, out, err)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]


@pytest.mark.slow
def test_generate_twice_same_text(cli, embedded):
    a = cli("generate", "--prompt", PROMPT, "--max-new-tokens", "30", "--seed", "0")
    b = cli("generate", "--prompt", PROMPT, "--max-new-tokens", "30", "--seed", "0")
    assert a[0] == 0 and a[1].strip() and a[1] == b[1]


@pytest.mark.slow
def test_generate_jsonl_output(cli, embedded, tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text("\n".join(json.dumps({"prompt": p}) for p in ["Say hi.", "Name a fruit."]) + "\n")
    out = tmp_path / "out.jsonl"
    code, _, err = cli(
        "generate",
        "--prompts",
        str(src),
        "--max-new-tokens",
        "8",
        "--temperature",
        "0.7",
        "--output",
        str(out),
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["Say hi.", "Name a fruit."]
    assert set(rows[0]) == {"prompt", "continuation", "method", "seed", "seconds"}


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--prompt", "  "], "empty"),
        (["--prompt", PROMPT, "--max-new-tokens", "0"], "--max-new-tokens"),
        (["--prompt", PROMPT, "--max-new-tokens", "-5"], "--max-new-tokens"),
        (["--prompt", PROMPT, "--control", "nonsense:1"], "unknown control kind 'nonsense'"),
        (["--prompt", PROMPT, "--model", "does/not/exist"], "does/not/exist"),
        (["--prompts", "/no/such/file.jsonl"], "/no/such/file.jsonl"),
        ([], "exactly one of"),
    ],
)
def test_bad_input_one_line_exit_2(cli, tmp_path, args, needle):
    out = tmp_path / "o.jsonl"
    code, stdout, err = cli("generate", *args, "--output", str(out))
    assert_one_line_error(code, stdout, err, needle)
    assert not out.exists()


def test_prompt_longer_than_context(cli, embedded, tmp_path):
    out = tmp_path / "o.jsonl"
    code, stdout, err = cli("generate", "--prompt", "word " * 9000, "--output", str(out))
    assert_one_line_error(code, stdout, err, "too long")
    assert not out.exists()


def test_corrupt_artifact_one_line(cli, tmp_path):
    from lmcontrol.artifacts import ArtifactError, read_meta

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.json").write_text("{broken")
    with pytest.raises(ArtifactError, match="corrupt"):
        read_meta(tmp_path / "a")


def test_missing_data_names_path(tmp_path, monkeypatch):
    from lmcontrol.data import DataError, load_dataset

    monkeypatch.setenv("LMCONTROL_DATA", str(tmp_path))
    with pytest.raises(DataError, match=str(tmp_path)):
        load_dataset("sst2", split="dev")


def test_bad_log_level_is_one_line(cli, monkeypatch):
    monkeypatch.setenv("LMCONTROL_LOG_LEVEL", "chatty")
    code, _, err = cli("controls")
    assert code == 2 and err.strip().splitlines() == [
        "error: LMCONTROL_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got 'CHATTY'"
    ]


def test_help_is_fast():
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lmcontrol", "--help"], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0 and "generate" in proc.stdout
    assert (
        "torch" not in sys.modules or elapsed < 5
    )  # generous on loaded CI; the budget is measured separately
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from lmcontrol.cli import main; main._register_plugins(); "
            "print(any(m.startswith(('torch', 'transformers')) for m in sys.modules))",
        ],
        capture_output=True,
        text=True,
    )
    assert check.stdout.strip() == "False", "importing the CLI must not import torch/transformers"


def test_main_registers_plugin_commands_once(cli):
    """Calling ``main`` again (tests, notebooks) must not append a second copy of every command."""
    from lmcontrol.cli.main import app, train_app

    cli("--help")
    counts = (len(app.registered_commands), len(train_app.registered_commands))
    for _ in range(3):
        cli("generate", "--prompt", " ")
    assert (len(app.registered_commands), len(train_app.registered_commands)) == counts
    names = [info.name for info in app.registered_commands if info.name]
    assert len(names) == len(set(names)), "a command is registered twice"
