"""Real diffusers 0.42.1 Flux blocks (FluxTransformerBlock / FluxSingleTransformerBlock) at toy width,
so Dynamo traces the real Python (attention processor, dispatch_attention_fn, AdaLayerNormZero...).
FP8=1: every Linear as the engine's plain-buffer Float8Linear (kontext_engine/fp8_linear.py). FP8=tensor: the
same buffers with one scale per operand, as torch 2.11's CPU _scaled_mm takes no other (wrong arithmetic,
the same graph inputs and guards: for the cache question only)."""
import os

import torch
import torch.nn as nn
from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock as SingleBlock
from diffusers.models.transformers.transformer_flux import FluxTransformerBlock as DoubleBlock

DIM, HEADS, HEAD_DIM = 64, 2, 32


class Tiny(nn.Module):
    _repeated_blocks = ["FluxTransformerBlock", "FluxSingleTransformerBlock"]

    def __init__(self, n_double=3, n_single=3):
        super().__init__()
        self.transformer_blocks = nn.ModuleList([DoubleBlock(DIM, HEADS, HEAD_DIM) for _ in range(n_double)])
        self.single_transformer_blocks = nn.ModuleList([SingleBlock(DIM, HEADS, HEAD_DIM) for _ in range(n_single)])
        if os.environ.get("FP8") in ("1", "tensor"):
            from kontext_engine import fp8_linear

            if os.environ["FP8"] == "tensor":
                fp8_linear.quantize_rows = per_tensor
            fp8_linear.swap_linears(self, lambda module, name: True)

    def forward(self, hidden, ctx, temb, cos, sin):
        rope = (cos, sin)
        for blk in self.transformer_blocks:
            ctx, hidden = blk(hidden, ctx, temb, rope)
        for blk in self.single_transformer_blocks:
            ctx, hidden = blk(hidden, ctx, temb, rope)
        return hidden


def make_inputs(batch, img_seq, txt_seq=8):
    g = torch.Generator().manual_seed(batch * 1000 + img_seq)
    s = img_seq + txt_seq
    ang = torch.rand(s, HEAD_DIM // 2, generator=g).repeat_interleave(2, dim=-1)
    return (torch.randn(batch, img_seq, DIM, generator=g), torch.randn(batch, txt_seq, DIM, generator=g),
            torch.randn(batch, DIM, generator=g), ang.cos(), ang.sin())


def block_args(cls, blk, inputs):
    hidden, ctx, temb, cos, sin = inputs
    return (blk, hidden, ctx, temb, (cos, sin))


def per_tensor(x):
    scale = x.abs().amax().float().clamp(min=1e-12).reshape(1, 1) / 448.0
    return (x.float() / scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn), scale
