"""FP8 Linear layers without a tensor subclass: float8 weights as plain buffers and `torch._scaled_mm`.

The arithmetic of torchao's dynamic per-row FP8 (Float8DynamicActivationFloat8WeightConfig with PerRow):
e4m3 weights scaled per output row, activations scaled per token at every call, float32 scales, fast
accumulation. What differs is the weight's type. torchao's Float8Tensor is a tensor subclass: Dynamo
cannot serialise guards on it, which stopped its traces from being cached across restarts (plain buffers:
perf/experiments/2026-11-27-dynamo-precompile), and a compiled graph's runtime prologue, which the GPU waits
through after the cache decision's sync, is where AOTAutograd unwraps subclass inputs. Measured on an H100
(bench variant `stack_scaled_mm`, perf/NOTES.md run Y1): as fast as torchao's, within the run-to-run spread.
"""

from __future__ import annotations

from typing import Callable

import torch

E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max
MIN_AMAX = 1e-12  # an all-zero row gets a finite scale (its values stay 0)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., k] as e4m3 and its float32 scale per row [..., 1]: x ≈ data * scale."""
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=MIN_AMAX) / E4M3_MAX
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn), scale


class Float8Linear(torch.nn.Module):
    """An nn.Linear's forward with e4m3 weights (scaled per output row) and per-token e4m3 activations."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight, scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight", weight)  # [out, in]: its transpose is the column-major operand _scaled_mm wants
        self.register_buffer("weight_scale", scale.t().contiguous())  # [1, out]
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data, scale = quantize_rows(x.reshape(-1, self.in_features))
        out = torch._scaled_mm(data, self.weight.t(), scale_a=scale, scale_b=self.weight_scale, bias=self.bias,
                               out_dtype=x.dtype, use_fast_accum=True)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def swap_linears(root: torch.nn.Module, selected: Callable[[torch.nn.Linear, str], bool]) -> None:
    """Replaces every nn.Linear under root for which selected(module, qualified name) holds by a
    Float8Linear, one at a time (each bf16 weight is freed as its FP8 copy is made)."""
    names = [name for name, module in root.named_modules()
             if isinstance(module, torch.nn.Linear) and selected(module, name)]  # names: no module outlives its swap
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name)
        setattr(parent, child, Float8Linear(getattr(parent, child)))
