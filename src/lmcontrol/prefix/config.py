"""Configs for prefix-tuning (Li & Liang 2021) and prompt compression (Mu et al. 2023, gisting)."""

from __future__ import annotations

import dataclasses

from lmcontrol import LMControlError

FORMAT_VERSION = 1
INITS = ("words", "random")


@dataclasses.dataclass(frozen=True)
class PrefixConfig:
    """Shape and training-time parameterisation of one key/value prefix.

    Attributes:
        length: number of virtual tokens m (Li & Liang use 5-10 for table-to-text).
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
        steps, lr, batch_size: optimisation of the KV tensors (trained directly, no MLP).
        samples_per_input: teacher responses per user input (1 greedy + the rest sampled at ``temperature``).
        max_new_tokens: teacher response length.
        top_k: teacher distribution kept per position (renormalised) for the KL.
        chat: P is given as the chat template's system message (True) or prepended as plain text.
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
