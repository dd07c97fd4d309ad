"""Fused against separate QKV projections in one full-size Flux block (1024² edit shape), FP8 torchao,
both compiled in one process and timed alternately (scratch experiment)."""
import json, os, statistics, sys, time
import torch
from diffusers.models.transformers.transformer_flux import FluxPosEmbed, FluxSingleTransformerBlock, FluxTransformerBlock
from kontext_engine.optimizations import _fuse_qkv, _quantize_fp8

kind, out = sys.argv[1], sys.argv[2]
dev = torch.device("cuda")
def make(fused):
    torch.manual_seed(0)
    root = torch.nn.Module()
    root.transformer_blocks = torch.nn.ModuleList([(FluxTransformerBlock if kind == "double" else FluxSingleTransformerBlock)(3072, 24, 128)])
    root.to(dev, torch.bfloat16)
    if fused:
        _fuse_qkv(root)
    _quantize_fp8(root, True, "torchao")
    b = root.transformer_blocks[0]
    b.compile(fullgraph=True)
    return b
blocks = {"fused": make(True), "separate": make(False)}
img, txt = 8192, 512
hidden = torch.randn(1, img, 3072, device=dev, dtype=torch.bfloat16)
encoder = torch.randn(1, txt, 3072, device=dev, dtype=torch.bfloat16)
temb = torch.randn(1, 3072, device=dev, dtype=torch.bfloat16)
rope = FluxPosEmbed(theta=10000, axes_dim=[16, 56, 56])(torch.randint(0, 64, (txt + img, 3), device=dev).float())
times = {k: [] for k in blocks}
with torch.inference_mode():
    for b in blocks.values():
        for _ in range(3):
            b(hidden, encoder, temb, image_rotary_emb=rope)
    for _ in range(7):
        for name, b in blocks.items():
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(); s.record()
            for _ in range(20):
                b(hidden, encoder, temb, image_rotary_emb=rope)
            e.record(); torch.cuda.synchronize()
            times[name].append(s.elapsed_time(e) / 20)
row = {"kind": kind, **{k: {"median_ms": round(statistics.median(v), 4), "all": [round(x, 4) for x in v]} for k, v in times.items()}}
print(json.dumps(row))
open(out, "a").write(json.dumps(row) + "\n")
