"""Registry entries for Diffusion-LM: the trainers, the sampling command, ``--control fudge``, the benchmark suite
and its metrics, the demo (light: no torch at import; the commands live in ``cli``)."""

from __future__ import annotations

from lmcontrol.registry import (
    METRICS,
    lazy,
    register_command,
    register_control,
    register_demo,
    register_suite,
    register_trainer,
)

_CLI = "lmcontrol.diffusion_lm.cli"
_BENCH = "lmcontrol.diffusion_lm.bench"


def _command(attr: str):  # noqa: ANN202
    """A trainer/command factory: ``factory()`` imports ``cli`` (typer and torch-free configs) and returns ``attr``."""
    return lazy(_CLI, attr).resolve


register_control(
    "fudge",
    lazy("lmcontrol.diffusion_lm.control", "fudge_from_spec"),
    "FUDGE guidance by the Diffusion-LM classifiers, fudge:attribute=food=Italian[,pos=TAGS][,span=I-J]"
    "[,length=N][,k=20][,weight=1] (AR baseline; with an E2E prefix use prefix:artifacts/prefix-e2e too)",
)
register_suite(
    "diffusion-lm",
    lazy(_BENCH, "make_suite"),
    "Diffusion-LM vs FUDGE AR per control task (semantic content, POS, span, length, infilling) + steps sweep",
)
register_suite(
    "diffusion-lm-guidance",
    lazy(_BENCH, "make_guidance_suite"),
    "Diffusion-LM guidance step size x fluency weight grid on validation targets (how the defaults were chosen)",
)
register_suite(
    "diffusion-lm-fluency",
    lazy(_BENCH, "make_fluency_suite"),
    "Diffusion-LM unconstrained fluency: judge perplexity at 100 / 200 steps and with MBR, vs human references",
)
METRICS.register(
    "e2e-control",
    lazy(_BENCH, "control_success"),
    "Diffusion-LM control success per task (%), prompts = target texts",
    needs=(),
    default_arg=None,
)
METRICS.register(
    "e2e-lm-score",
    lazy(_BENCH, "lm_score"),
    "perplexity of E2E samples under a judge neither method trained (bare SmolLM2; the Diffusion-LM lm-score)",
    needs=(),
    default_arg=None,
)
register_command("diffusion-lm", _command("sample_cmd"), "Sample (controlled) sentences from the E2E Diffusion-LM.")
register_trainer(
    "diffusion-lm", _command("train_diffusion_lm_cmd"), "Train a Diffusion-LM denoiser on E2E (Li et al. 2022)."
)
register_trainer(
    "diffusion-lm-classifier",
    _command("train_classifier_cmd"),
    "Train the noised-latent attribute + POS classifier used to steer Diffusion-LM.",
)
register_trainer(
    "diffusion-lm-span-classifier",
    _command("train_span_classifier_cmd"),
    "Train the noised-latent syntax-span classifier used to steer Diffusion-LM.",
)
register_demo("Diffusion-LM", lazy(_CLI, "demo"), "non-autoregressive E2E generation with plug-and-play control")
