"""Trainer options generated from config dataclasses: types, defaults, help from field docs, validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lmcontrol import LMControlError
from lmcontrol.cli.config_options import check_resume, config_options, field_help


@dataclasses.dataclass(frozen=True)
class Opt:
    """A test config.

    Attributes:
        alpha: the first knob,
            continued on a second line.
    """

    alpha: float = 0.5
    beta: int = 3  # the second knob
    gamma: str | None = None
    delta: bool = False
    eps: int = dataclasses.field(default=7, metadata={"help": "from metadata"})
    skip: tuple[int, ...] = (1, 2)

    def __post_init__(self) -> None:
        if self.beta < 0:
            raise LMControlError(f"beta must be >= 0, got {self.beta}")


@dataclasses.dataclass(frozen=True)
class Other:
    beta: int = 1  # shares a name with Opt.beta


def _app(fn) -> typer.Typer:
    app = typer.Typer()
    app.command()(fn)
    return app


def test_field_help_from_docstring_comment_and_metadata():
    docs = field_help(Opt)
    assert docs["alpha"] == "The first knob, continued on a second line."
    assert docs["beta"] == "The second knob"
    assert docs["eps"] == "From metadata"


def test_generated_options_build_the_config():
    seen = {}

    @config_options("cfg", Opt, exclude=("skip",), defaults={"beta": 5})
    @config_options("other", Other, rename={"beta": "other_beta"})
    def cmd(out: Path, cfg: Opt, other: Other, flag: bool = False) -> None:
        seen.update(out=out, cfg=cfg, other=other, flag=flag)

    runner = CliRunner()
    res = runner.invoke(_app(cmd), ["x", "--alpha", "0.25", "--gamma", "g", "--delta", "--other-beta", "9"])
    assert res.exit_code == 0, res.output
    assert seen["cfg"] == Opt(alpha=0.25, beta=5, gamma="g", delta=True)  # beta: the command's default
    assert seen["other"] == Other(beta=9) and seen["out"] == Path("x") and seen["flag"] is False
    helptext = runner.invoke(_app(cmd), ["--help"]).output
    for piece in ("--alpha", "The first knob", "--beta", "The second knob", "--no-delta", "--other-beta", "From"):
        assert piece in helptext, piece
    assert "--skip" not in helptext


def test_bad_value_is_the_configs_own_error():
    @config_options("cfg", Opt, exclude=("skip",))
    def cmd(cfg: Opt) -> None:
        pass

    res = CliRunner().invoke(_app(cmd), ["--beta", "-1"])
    assert isinstance(res.exception, LMControlError) and "beta must be >= 0" in str(res.exception)


def test_programming_errors_are_caught_at_decoration():
    with pytest.raises(TypeError, match="no command-line form"):
        config_options("cfg", Opt)(lambda cfg: None)  # the tuple field is not excluded
    with pytest.raises(TypeError, match="clash"):

        @config_options("cfg", Opt, exclude=("skip",))
        def cmd(cfg: Opt, beta: int = 0) -> None:
            pass

    with pytest.raises(TypeError, match="no field"):
        config_options("cfg", Opt, include=("nope",))


def test_check_resume(tmp_path: Path):
    check_resume(tmp_path, resume=False)
    with pytest.raises(LMControlError, match="--resume: no checkpoint"):
        check_resume(tmp_path, resume=True)
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text("{}")
    check_resume(tmp_path, resume=True)


@pytest.mark.parametrize(
    ("trainer", "options"),
    [
        ("prefix", ["--steps", "--lr", "--seed", "--checkpoint-every", "--length", "--reparam-hidden", "--examples"]),
        ("recontrol", ["--steps", "--lr", "--seed", "--rollout-temperature", "--rollout-batch", "--depth"]),
        ("reward", ["--epochs", "--heads", "--seed", "--lr", "--heldout"]),
        ("probe", ["--data", "--text-column", "--seed", "--holdout"]),
        ("investigator", ["--sft-pairs", "--sft-epochs", "--sft-lr", "--rounds", "--temperature", "--beta1", "--seed"]),
    ],
)
def test_trainers_use_generated_options(cli, trainer, options):
    code, out, _ = cli("train", trainer, "--help")
    assert code == 0
    for opt in options:
        assert opt in out, opt


def test_trainer_resume_without_checkpoint_fails_before_loading(cli, tmp_path: Path, monkeypatch):
    import lmcontrol.models

    monkeypatch.setattr(lmcontrol.models, "load_lm", lambda *a, **k: pytest.fail("loaded a model"))
    code, _, err = cli("train", "prefix", "--out", str(tmp_path / "p"), "--resume")
    assert code == 2 and "--resume: no checkpoint" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("compress", "--prompt-file", "x.txt", "--out", str(tmp_path / "c"), "--tokens", "0")
    assert code == 2 and "--tokens must be" in err
