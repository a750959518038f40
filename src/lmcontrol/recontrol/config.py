"""Frozen, validated configs for RE-Control (Kong et al. 2024, "Aligning Large Language Models with
Representation Editing: A Control Perspective").

Three configs, one per concern: the value network's shape (saved with its artifact), how rollouts are made
(saved with the rollouts), and how the test-time control edits hidden states (given per ``--control`` spec).
"""

from __future__ import annotations

import dataclasses
import math

from lmcontrol import LMControlError

FORMAT_VERSION = 1
ACTIVATIONS = ("relu", "gelu", "silu", "tanh")
TARGETS = ("bellman", "mc")
BASELINES = ("none", "prompt")


@dataclasses.dataclass(frozen=True)
class ValueNetworkConfig:
    """V(h): an MLP from the edit-site state (d = ``hidden_size``) to a scalar value.

    ``depth`` counts linear layers (2 = one hidden layer, as in the authors' inference code; 3 = two).
    ``linear_skip`` adds a linear path, V(x) = w . x + MLP(x): its gradient w is one direction shared by every
    state (what static RE estimates from the mean advantage), the MLP's adds a state-dependent correction.
    ``norm_input`` standardises h with the training states' mean/std (stored as buffers) before the MLP,
    which makes the gradient-ascent step size comparable across models.
    """

    hidden_size: int = 576  # d, the LM's hidden size (filled from the model)
    depth: int = 3  # value-network linear layers (2 or 3)
    width: int = 576  # value-network width
    activation: str = "relu"  # relu, gelu, silu or tanh
    linear_skip: bool = False  # V(h) = w . x + MLP(x): a linear path beside the MLP (x = standardised h)
    norm_input: bool = True  # standardise h with the training states' mean / std
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not 2 <= self.depth <= 3:
            raise LMControlError(f"value network depth must be 2 or 3, got {self.depth}")
        if self.hidden_size < 1 or self.width < 1:
            raise LMControlError(f"hidden_size and width must be >= 1, got {self.hidden_size}, {self.width}")
        if self.activation not in ACTIVATIONS:
            raise LMControlError(
                f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}"
            )


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """How the behaviour policy (the unedited base LM) is rolled out to collect states.

    Prompts are the *first human turn* of each HH-RLHF dialogue (or the ``prompt`` field of another data
    set, e.g. ``rtp:toxic``), wrapped in the model's chat template (the same input ``lmcontrol generate``
    and the benchmark give the model; SmolLM2's template holds one user turn well, while the whole
    multi-turn transcript as one user message reads as a quoted dialogue). With ``samples`` > 1 each prompt
    is rolled out several times, which the per-prompt baseline of ``ValueTrainConfig`` needs.
    """

    prompts: str = "hh-rlhf:harmless-base"  # data set whose first human turns are the prompts (its 'train' part)
    max_new_tokens: int = 48  # tokens per rollout
    temperature: float = 0.7  # sampling temperature of the rollouts (a spread of rewards to learn from)
    top_p: float = 0.95  # nucleus sampling of the rollouts
    samples: int = 1  # rollouts per prompt (> 1 for --baseline prompt)
    batch_size: int = 16  # rollout batch size
    site: str = "final"  # edit site: 'final' (after the final norm) or 'layer:L'
    seed: int = 0  # seed of the rollouts

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.samples < 1 or self.batch_size < 1:
            raise LMControlError("max_new_tokens, samples and batch_size must be >= 1")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise LMControlError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise LMControlError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclasses.dataclass(frozen=True)
class ValueTrainConfig:
    """What V is regressed on (the optimiser settings live in ``lmcontrol.training.TrainConfig``).

    ``target``: ``bellman`` = the paper's TD(0) target, sg[V(s_{t+1})] for inner states and r for the last
    (eq. 8); ``mc`` = the Monte-Carlo return r for every state of the rollout (no bootstrapping; lower bias
    when V is still poor, higher variance).
    ``baseline``: ``none`` = the raw reward; ``prompt`` = the reward minus the mean reward of the rollouts
    of the same prompt (needs ``RolloutConfig.samples`` > 1), so V learns the response's share of the
    reward (an advantage, as in GRPO's group baseline) instead of what the prompt already decides.
    ``val_fraction`` of the *prompts* (all their rollouts) is held out for the card's validation figures.
    """

    target: str = "bellman"  # value target: bellman (TD(0), paper eq. 8) or mc (Monte-Carlo return)
    baseline: str = "none"  # none, or prompt (reward minus the mean reward of the prompt's rollouts)
    val_fraction: float = 0.1  # share of the prompts held out for the card's validation figures

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise LMControlError(f"value target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.baseline not in BASELINES:
            raise LMControlError(f"baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}")
        if not 0 <= self.val_fraction < 1:
            raise LMControlError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclasses.dataclass(frozen=True)
class ReControlConfig:
    """Test-time control: ``steps`` gradient-ascent updates of size ``step_size`` on V(h + u) (paper eq. 9).

    ``max_norm`` (0 = off) optionally clips the control ||u|| relative to ||h||, a guard against pushing the
    state off the manifold the LM head was trained on.
    """

    step_size: float = 0.5  # gradient-ascent step size on V(h + u)
    steps: int = 5  # control updates per token
    site: str = "final"  # edit site: 'final' or 'layer:L'
    max_norm: float = 0.0  # clip ||u|| to this share of ||h|| (0 = off)

    def __post_init__(self) -> None:
        if (
            not (isinstance(self.step_size, int | float) and math.isfinite(self.step_size))
            or self.step_size <= 0
        ):
            raise LMControlError(f"recontrol step_size must be a finite number > 0, got {self.step_size}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise LMControlError(f"recontrol steps must be an integer >= 1, got {self.steps}")
        if not (math.isfinite(self.max_norm) and self.max_norm >= 0):
            raise LMControlError(f"recontrol max_norm must be >= 0, got {self.max_norm}")
