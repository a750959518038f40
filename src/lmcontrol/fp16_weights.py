"""Half-precision packed weights for decoding on a CPU: fbgemm's fp16-weight GEMM, float32 activations.

A decode step at batch 1-16 reads every weight once and does little arithmetic with it, so its speed is the
speed of the matrix multiplications at a handful of rows. On CPUs without AVX512-BF16 (measured on this
project's AMD EPYC with AVX2) MKL's float32 ``sgemm`` handles 8 rows badly: it reads SmolLM2-135M's 540 MB of
weights at 2.9 GB/s, a third of what a plain read of memory reaches. fbgemm's fp16 GEMM (PyTorch's
``quantized::linear_dynamic_fp16``, built for small-batch inference) keeps the weights pre-packed as float16 —
half the bytes, laid out for its kernel — converts them to float32 in registers and accumulates in float32.

What changes: each weight is rounded once to float16 (relative error of the logits ~2e-4). Activations, norms,
attention and the KV cache stay float32, so greedy text almost always equals the float32 model's
(`lmcontrol bench engine` reports the share). What does not work: gradients through the packed layers (this
is an inference format: train on the dense model) and non-CPU devices (on a GPU load float16/bfloat16).

``pack_fp16_weights(model)`` swaps every ``nn.Linear`` (the LM head included) for a ``PackedFp16Linear`` in
place; ``load_lm(..., weights="fp16-packed")`` does it on its own copy of the model.
"""

from __future__ import annotations

import torch
from torch import nn

from lmcontrol import LMControlError


class PackedFp16Linear(nn.Module):
    """``y = x W^T + b`` with W packed as float16 for fbgemm; x, b and y are float32."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.quantized.linear_prepack_fp16(weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(x.float(), self.packed)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weights=fp16-packed"


def check_supported(model: nn.Module) -> None:
    """One clear error when the packed format cannot run here (not float32 on a CPU, or no fbgemm)."""
    param = next(model.parameters())
    if param.device.type != "cpu":
        raise LMControlError(
            f"weights=fp16-packed is a CPU format (fbgemm); the model is on {param.device.type} — "
            "on a GPU load it with dtype float16 or bfloat16 instead"
        )
    if param.dtype != torch.float32:
        raise LMControlError(f"weights=fp16-packed packs a float32 model, this one is {param.dtype}")
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        raise LMControlError(
            "weights=fp16-packed needs PyTorch's fbgemm kernels (x86-64 CPUs); this build has "
            f"{torch.backends.quantized.supported_engines}"
        )


def pack_fp16_weights(model: nn.Module) -> int:
    """Replace every ``nn.Linear`` of ``model`` by a ``PackedFp16Linear`` in place; returns how many."""
    check_supported(model)
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, PackedFp16Linear(child))
                swapped += 1
    if not swapped:
        raise LMControlError("weights=fp16-packed: the model has no nn.Linear layers to pack")
    return swapped
