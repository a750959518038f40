"""Configs for prefix-tuning (Li & Liang 2021), its training run, and prompt compression (Mu et al. 2023, gisting)."""

from __future__ import annotations

import dataclasses

from lmcontrol import LMControlError

FORMAT_VERSION = 1
INITS = ("words", "random")


@dataclasses.dataclass(frozen=True)
class PrefixConfig:
    """Shape and training-time parameterisation of one key/value prefix.

    Attributes:
        length: prefix length m, the number of virtual tokens (Li & Liang use 5-10 for table-to-text).
        num_layers, num_kv_heads, head_dim: the base model's attention geometry (filled from ``ModelInfo``).
        hidden_size: the base model's hidden size d (size of the prefix embedding before the MLP).
        reparam_hidden: mid width of the reparameterisation MLP (Li & Liang §4.3: 512 for GPT-2); 0 = train the
            KV tensors directly (what a merged prefix is, and what compression uses).
        init: ``"words"`` = start from the model's own keys/values of ``init_text`` (Li & Liang §7.2: real-word
            initialisation helps most in low-data settings), ``"random"`` = small Gaussian.
        init_text: the words for ``init="words"`` (repeated / cut to ``length`` tokens).
        template: how an input becomes the prompt text (``{input}`` is replaced).
        chat: whether the prompt is wrapped in the chat template (generate with the same setting).
        merged: True once the MLP has been folded into plain KV tensors (every saved artifact).
    """

    length: int = 10
    num_layers: int = 30
    num_kv_heads: int = 3
    head_dim: int = 64
    hidden_size: int = 576
    reparam_hidden: int = 512
    init: str = "words"
    init_text: str = "Describe the table in one fluent sentence."
    template: str = "{input}\n"
    chat: bool = False
    merged: bool = False
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.length, int) or self.length < 1:
            raise LMControlError(f"prefix length must be an integer >= 1, got {self.length}")
        if self.reparam_hidden < 0:
            raise LMControlError(f"reparam_hidden must be >= 0, got {self.reparam_hidden}")
        if self.init not in INITS:
            raise LMControlError(f"prefix init must be one of {', '.join(INITS)}, got '{self.init}'")
        if "{input}" not in self.template:
            raise LMControlError(f"prefix template must contain '{{input}}', got {self.template!r}")
        if min(self.num_layers, self.num_kv_heads, self.head_dim, self.hidden_size) < 1:
            raise LMControlError("prefix geometry (layers, kv heads, head dim, hidden size) must be >= 1")

    @property
    def kv_numel(self) -> int:
        """Values in the merged prefix: layers x (K, V) x heads x m x head_dim."""
        return self.num_layers * 2 * self.num_kv_heads * self.length * self.head_dim


@dataclasses.dataclass(frozen=True)
class CompressConfig:
    """Gist-style compression of a long prompt P into k soft KV tokens.

    Attributes:
        tokens: k, the number of soft tokens.
        steps: optimiser steps on the KV tensors (trained directly, no MLP).
        lr: AdamW learning rate on the KV tensors.
        batch_size: teacher responses per step.
        samples_per_input: teacher responses per user input (1 greedy + the rest sampled at ``temperature``).
        temperature: sampling temperature of the teacher's extra responses.
        max_new_tokens: teacher response length.
        top_k: teacher distribution kept per position (renormalised) for the KL.
        chat: P is given as the chat template's system message (True) or prepended as plain text.
        seed: seed of the teacher samples and the batches.
    """

    tokens: int = 16
    steps: int = 150
    lr: float = 1e-2
    batch_size: int = 4
    samples_per_input: int = 2
    temperature: float = 0.7
    max_new_tokens: int = 40
    top_k: int = 64
    chat: bool = True
    seed: int = 0
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.tokens, int) or self.tokens < 1:
            raise LMControlError(f"--tokens must be an integer >= 1, got {self.tokens}")
        if self.steps < 1 or self.batch_size < 1 or self.samples_per_input < 1 or self.top_k < 1:
            raise LMControlError("steps, batch size, samples per input and top_k must be >= 1")


@dataclasses.dataclass(frozen=True)
class PrefixRun:
    """One ``train prefix`` invocation: the data and the evaluation (what the CLI and the benchmark both call).

    Attributes:
        data: data spec the data module reads (name[:subset] or a file); its 'train' split is used.
        input_field: input field of the data (the ``{input}`` of the template).
        target_field: target field of the data.
        examples: training examples (a seeded sample; None = all).
        batch_size: examples per step.
        max_length: tokens per example (prompt + target).
        eval_data: data with references to score with BLEU / ROUGE-L (for e2e: e2e:tokenized; None = none).
        eval_split: split of ``eval_data`` to score.
        eval_n: test rows to score (0 = no evaluation).
        max_new_tokens: tokens generated per test row.
    """

    data: str = "e2e"
    input_field: str = "src"
    target_field: str = "text"
    examples: int | None = 2000
    batch_size: int = 8
    max_length: int = 128
    eval_data: str | None = None
    eval_split: str = "test"
    eval_n: int = 100
    max_new_tokens: int = 40

    def __post_init__(self) -> None:
        if self.examples is not None and self.examples < 1:
            raise LMControlError(f"--examples must be >= 1, got {self.examples}")
        if self.batch_size < 1 or self.max_length < 2 or self.eval_n < 0 or self.max_new_tokens < 1:
            raise LMControlError("batch size, max length (>= 2), eval_n (>= 0) and max_new_tokens must be positive")
