"""One full-size Flux block at the 1024² edit shape, compiled alone (scratch experiment).

python blocks.py --kind double --fused 1 --fp8 torchao [--descent 1] [--save F] [--load F] [--out J]
Prints and appends a JSON line: ms per call, top kernels, inductor counters.
"""
import argparse, json, os, sys, time

import torch
from diffusers.models.transformers.transformer_flux import (FluxPosEmbed, FluxSingleTransformerBlock,
                                                             FluxTransformerBlock)

from kontext_engine.optimizations import _fuse_qkv, _quantize_fp8, compile_counts

p = argparse.ArgumentParser()
p.add_argument("--kind", default="double")
p.add_argument("--fused", type=int, default=1)
p.add_argument("--fp8", default="torchao")
p.add_argument("--descent", type=int, default=0)
p.add_argument("--save", default="")
p.add_argument("--load", default="")
p.add_argument("--out", required=True)
p.add_argument("--tag", default="")
a = p.parse_args()

loaded = None
if os.environ.get("DESC_LOG"):
    import logging
    lg = logging.getLogger("torch._inductor.runtime.coordinate_descent_tuner")
    lg.setLevel(logging.DEBUG)
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("DESC %(message)s"))
    lg.addHandler(h)
if a.load:
    loaded = torch.compiler.load_cache_artifacts(open(a.load, "rb").read())
if a.descent:
    torch._inductor.config.coordinate_descent_tuning = True

dev = torch.device(os.environ.get("DEV", "cuda"))
torch.manual_seed(0)
root = torch.nn.Module()
block = FluxTransformerBlock(3072, 24, 128) if a.kind == "double" else FluxSingleTransformerBlock(3072, 24, 128)
root.transformer_blocks = torch.nn.ModuleList([block])
root.to(dev, torch.bfloat16 if dev.type == "cuda" else torch.float32)
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
if a.fused:
    _fuse_qkv(root)
if a.fp8 != "none":
    _quantize_fp8(root, True, a.fp8)
block = root.transformer_blocks[0]

img, txt = (8192, 512) if dev.type == "cuda" else (256, 64)
dt = next(root.parameters()).dtype
hidden = torch.randn(1, img, 3072, device=dev, dtype=dt)
encoder = torch.randn(1, txt, 3072, device=dev, dtype=dt)
temb = torch.randn(1, 3072, device=dev, dtype=dt)
ids = torch.randint(0, 64, (txt + img, 3), device=dev).float()
rope = FluxPosEmbed(theta=10000, axes_dim=[16, 56, 56])(ids)

block.compile(fullgraph=True)
with torch.inference_mode():
    t0 = time.perf_counter()
    block(hidden, encoder, temb, image_rotary_emb=rope)
    sync()
    first = time.perf_counter() - t0
    for _ in range(3):
        block(hidden, encoder, temb, image_rotary_emb=rope)
    w0 = time.perf_counter()
    sync()
    for _ in range(20):
        block(hidden, encoder, temb, image_rotary_emb=rope)
    sync()
    ms = (time.perf_counter() - w0) * 1000 / 20
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA if dev.type == "cuda" else ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            block(hidden, encoder, temb, image_rotary_emb=rope)
        sync()
kernels = {}
for e in prof.events():
    if e.device_type == torch.autograd.DeviceType.CUDA or dev.type == "cpu":
        k = kernels.setdefault(e.name, [0, 0.0])
        k[0] += 1
        k[1] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
top = sorted(((v[1] / 5, v[0] // 5, n) for n, v in kernels.items()), reverse=True)[:25]
row = {"tag": a.tag, "kind": a.kind, "fused": a.fused, "fp8": a.fp8, "descent": a.descent, "load": bool(a.load),
       "first_call_s": round(first, 2), "ms_per_call": round(ms, 4), "counts": compile_counts(),
       "kernels_us_per_call": [[round(t, 1), c, n[:120]] for t, c, n in top]}
if a.save:
    saved = torch.compiler.save_cache_artifacts()
    if saved:
        data, info = saved
        open(a.save, "wb").write(data)
        row["saved"] = {k: len(v) for k, v in info.artifacts.items()}
if loaded is not None:
    row["loaded"] = {k: len(v) for k, v in loaded.artifacts.items()}
print(json.dumps(row))
with open(a.out, "a") as f:
    f.write(json.dumps(row) + "\n")
