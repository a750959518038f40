"""The value network V(h) of RE-Control (Kong et al. 2024, Sec. 4.2): an MLP on the LM's hidden states.

V estimates the expected final reward of a response from the state at any decoding step. It is trained on
the Bellman equation (``lmcontrol.recontrol.train``) and at test time its gradient w.r.t. the state gives
the control signal (``lmcontrol.recontrol.control``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from lmcontrol.artifacts import PretrainedMixin
from lmcontrol.recontrol.config import ValueNetworkConfig

ARTIFACT_KIND = "recontrol.value_network"

_ACT: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class ValueNetwork(PretrainedMixin, nn.Module):
    """RE-Control value network V: R^d -> R on the edit-site hidden state (Kong et al. 2024, eq. 7)."""

    artifact_kind: ClassVar[str] = ARTIFACT_KIND
    config_class: ClassVar[type] = ValueNetworkConfig

    def __init__(self, config: ValueNetworkConfig) -> None:
        super().__init__()
        self.config = config
        d, w = config.hidden_size, config.width
        dims = [d] + [w] * (config.depth - 1) + [1]
        layers: list[nn.Module] = []
        for i in range(config.depth):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < config.depth - 1:
                layers.append(_ACT[config.activation]())
        self.mlp = nn.Sequential(*layers)
        self.skip = nn.Linear(d, 1, bias=False) if config.linear_skip else None
        # input standardisation (set from the training states; identity until then)
        self.register_buffer("h_mean", torch.zeros(d))
        self.register_buffer("h_std", torch.ones(d))

    @torch.no_grad()
    def set_input_stats(self, states: torch.Tensor) -> None:
        """Standardise inputs with the mean and overall std of training states (N, d)."""
        if self.config.norm_input:
            self.h_mean.copy_(states.float().mean(0))
            std = states.float().std(0).pow(2).mean().sqrt().clamp_min(1e-4)  # scalar RMS of per-dim stds
            self.h_std.fill_(float(std))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (..., d) -> V(h): (...)."""
        x = (h.float() - self.h_mean) / self.h_std  # (..., d)
        v = self.mlp(x)  # (..., 1)
        if self.skip is not None:
            v = v + self.skip(x)
        return v.squeeze(-1)


def load_value_network(
    path: str, model_name: str | None = None, hidden_size: int | None = None
) -> ValueNetwork:
    """Load a value-network artifact, refusing one made for another base model or hidden size."""
    return ValueNetwork.from_pretrained(path, model_name=model_name, hidden_size=hidden_size)
