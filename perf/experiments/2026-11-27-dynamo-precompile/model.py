"""Tiny stand-in for Flux: two block classes (double-stream-like and single-stream-like),
several instances each, applied in sequence. Small dims so CPU inductor is quick."""
import torch
import torch.nn as nn
import torch.nn.functional as F

DIM = 64
HEADS = 4


def apply_rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class AdaNorm(nn.Module):
    def __init__(self, dim, n):
        super().__init__()
        self.lin = nn.Linear(dim, n * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.n = n

    def forward(self, x, temb):
        mods = self.lin(F.silu(temb)).chunk(self.n, dim=-1)
        shift, scale = mods[0], mods[1]
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None], mods[2:]


class Attn(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.norm_q = nn.RMSNorm(dim // heads)
        self.norm_k = nn.RMSNorm(dim // heads)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x, cos, sin):
        b, s, d = x.shape
        h = self.heads
        q = self.norm_q(self.to_q(x).view(b, s, h, d // h)).transpose(1, 2)
        k = self.norm_k(self.to_k(x).view(b, s, h, d // h)).transpose(1, 2)
        v = self.to_v(x).view(b, s, h, d // h).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(o.transpose(1, 2).reshape(b, s, d))


class DoubleBlock(nn.Module):
    def __init__(self, dim=DIM, heads=HEADS):
        super().__init__()
        self.norm1 = AdaNorm(dim, 6)
        self.norm1_ctx = AdaNorm(dim, 6)
        self.attn = Attn(dim, heads)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))
        self.ff_ctx = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))

    def forward(self, hidden, ctx, temb, cos, sin):
        nh, (gate_msa, shift_mlp, scale_mlp, gate_mlp) = self.norm1(hidden, temb)
        nc, (c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp) = self.norm1_ctx(ctx, temb)
        joint = torch.cat([nc, nh], dim=1)
        a = self.attn(joint, cos, sin)
        ca, ha = a[:, : ctx.shape[1]], a[:, ctx.shape[1]:]
        hidden = hidden + gate_msa[:, None] * ha
        hidden = hidden + gate_mlp[:, None] * self.ff(F.layer_norm(hidden, (hidden.shape[-1],)) * (1 + scale_mlp[:, None]) + shift_mlp[:, None])
        ctx = ctx + c_gate_msa[:, None] * ca
        ctx = ctx + c_gate_mlp[:, None] * self.ff_ctx(F.layer_norm(ctx, (ctx.shape[-1],)) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None])
        return ctx, hidden


class SingleBlock(nn.Module):
    def __init__(self, dim=DIM, heads=HEADS):
        super().__init__()
        self.norm = AdaNorm(dim, 3)
        self.attn = Attn(dim, heads)
        self.proj_mlp = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU(approximate="tanh")
        self.proj_out = nn.Linear(5 * dim, dim)

    def forward(self, hidden, temb, cos, sin):
        res = hidden
        nh, (gate,) = self.norm(hidden, temb)
        mlp = self.act(self.proj_mlp(nh))
        a = self.attn(nh, cos, sin)
        out = self.proj_out(torch.cat([a, mlp], dim=2))
        return res + gate[:, None] * out


class Tiny(nn.Module):
    _repeated_blocks = ["DoubleBlock", "SingleBlock"]

    def __init__(self, n_double=3, n_single=3):
        super().__init__()
        self.transformer_blocks = nn.ModuleList([DoubleBlock() for _ in range(n_double)])
        self.single_transformer_blocks = nn.ModuleList([SingleBlock() for _ in range(n_single)])

    def forward(self, hidden, ctx, temb, cos, sin):
        for blk in self.transformer_blocks:
            ctx, hidden = blk(hidden, ctx, temb, cos, sin)
        h = torch.cat([ctx, hidden], dim=1)
        for blk in self.single_transformer_blocks:
            h = blk(h, temb, cos, sin)
        return h[:, ctx.shape[1]:]


def make_inputs(batch, img_seq, txt_seq=8):
    g = torch.Generator().manual_seed(batch * 1000 + img_seq)
    s = img_seq + txt_seq
    hd = DIM // HEADS
    ang = torch.rand(s, hd // 2, generator=g)
    return (torch.randn(batch, img_seq, DIM, generator=g), torch.randn(batch, txt_seq, DIM, generator=g),
            torch.randn(batch, DIM, generator=g), ang.cos(), ang.sin())


def block_args(cls, blk, inputs):
    hidden, ctx, temb, cos, sin = inputs
    if cls is DoubleBlock:
        return (blk, hidden, ctx, temb, cos, sin)
    return (blk, torch.cat([ctx, hidden], 1), temb, cos, sin)
