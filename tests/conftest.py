"""Shared fixtures. Unit tests use a tiny random Llama (seconds); the fast suite runs the embedded model in
test_generation.py::test_greedy_equals_model_generate_embedded (and a CLI context check); `slow` tests do more."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny():
    from lmcontrol.models import tiny_lm

    return tiny_lm(seed=0)


@pytest.fixture(scope="session")
def embedded():
    """The real embedded SmolLM2-135M-Instruct (converted to the safetensors cache on first use)."""
    from lmcontrol.models import load_lm

    return load_lm()


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""
    from lmcontrol.cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
