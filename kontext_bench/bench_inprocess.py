"""In-process benchmark of the optimization stack, through the same engine code that serves requests.

Every variant is an EngineSettings delta applied by `KontextEngine.load`, or by a peer's stack (PEERS:
cache-dit); all variants use the same seed and inputs. Per variant and shape: end-to-end seconds
(warm-up excluded, N runs, median and spread, synchronised clocks), transformer ms per full and per
cached step (CUDA events between step callbacks), achieved TFLOP/s against the dense matmul rates
measured in this run, the ratio to the step's floor, peak GPU memory (from loading on), steps computed
vs skipped, and fidelity (PSNR and relative L2 of the final image) against the baseline variant of the
same run.

  python -m kontext_bench.bench_inprocess --source random-full --variants baseline,regional_compile \
      --shapes edit1024 --steps 28 --runs 2 --out results/bench.json
"""

from __future__ import annotations

import argparse
import datetime
import gc
import io
import itertools
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from kontext_engine import EditRequest, KontextEngine
from kontext_engine.codecs import decode_image
from kontext_engine.settings import EngineSettings
from kontext_bench.input_data import synthetic_image
from kontext_bench.peer_cache_dit import CacheDitPeer

# The measured best sets, which the variants below change one thing at a time (the profiles carry them).
COMPILED_BF16 = {"compile": "regional", "fuse_qkv": True, "compile_vae": True, "vae_channels_last": True}
FP8 = {**COMPILED_BF16, "fp8": True}
STACK = {**FP8, "cache_threshold": 0.08}
STACK_UNFUSED = {key: value for key, value in STACK.items() if key != "fuse_qkv"}
VARIANTS = {
    "baseline": {},
    "fbcache_0.08": {"cache_threshold": 0.08},
    "fbcache_0.12": {"cache_threshold": 0.12},
    # Every step after the first reuses the cache: measures what a cached step costs.
    "fbcache_always_hit": {"cache_threshold": 1000.0},
    "fused_qkv": {"fuse_qkv": True},
    "vae_channels_last": {"vae_channels_last": True},
    "cudnn_attention": {"attention_backend": "_native_cudnn"},
    "compile_vae": {"compile_vae": True},
    "compile_vae_channels_last": {"compile_vae": True, "vae_channels_last": True},
    "regional_compile": {"compile": "regional"},
    "regional_compile_recipe": {"compile": "regional", "inductor_recipe": True},
    "full_compile": {"compile": "full"},
    "compiled_bf16": COMPILED_BF16,
    # One graph per shape: several shapes in one run without a symbolic (slower) recompile.
    "compiled_bf16_static": {**COMPILED_BF16, "static_shapes": True},
    "compiled_bf16_autotune": {**COMPILED_BF16, "compile_mode": "max-autotune-no-cudagraphs"},
    "fp8_eager": {"fp8": True, "fuse_qkv": True},
    "fp8_regional": {"fp8": True, "fuse_qkv": True, "compile": "regional"},
    "fp8_full_compile": {"fp8": True, "fuse_qkv": True, "compile": "full"},
    "fp8": FP8,
    # One change each against fp8 (the profile's predictions, perf/NOTES.md): CUDA graphs per compiled block
    # (static shapes, as graphs need), max-autotune GEMMs without graphs.
    "fp8_cudagraphs": {**FP8, "compile_mode": "reduce-overhead", "static_shapes": True},
    "fp8_static": {**FP8, "static_shapes": True},
    # CUDA graphs per regionally compiled block fail: every block of a class replays one graph, so a block's
    # output buffer is overwritten by the next block's run. Graphs need the whole transformer compiled.
    "fp8_full_static": {**FP8, "compile": "full", "static_shapes": True},
    "fp8_full_cudagraphs": {**FP8, "compile": "full", "compile_mode": "reduce-overhead", "static_shapes": True},
    "fp8_autotune": {**FP8, "compile_mode": "max-autotune-no-cudagraphs"},
    # inductor config is process-wide: run these after the variants they are compared with
    "fp8_multikernel": {**FP8, "multi_kernel": True},
    "fp8_descent": {**FP8, "coordinate_descent": True},
    "stack_descent": {**STACK, "coordinate_descent": True},
    # FP8 weights as plain buffers and Dynamo's traces kept with the compile artifacts (kontext_engine/dynamo_cache.py;
    # the gpu-fp8-fast-start profile): torch's caching_precompile is process-wide too, and torchao's FP8 weights
    # fail under it
    "stack_dynamo_cache": {**STACK, "fp8_linear": "scaled_mm", "dynamo_cache": True},
    # One change each against stack: as cache-dit's stack differs (Q, K and V projections left apart, the
    # whole transformer compiled), and the AdaLN modulation Linears (one row per image) left in bf16.
    "stack_unfused_qkv": STACK_UNFUSED,
    "stack_unfused_double": {**STACK, "fuse_qkv_double": False},  # fused in the single-stream blocks only
    "stack_full": {**STACK, "compile": "full"},
    "stack_unfused_full": {**STACK_UNFUSED, "compile": "full"},
    "stack_bf16_modulation": {**STACK, "fp8_modulation": False},
    "stack": STACK,
    # FP8 weights as plain float8 buffers instead of torchao's tensor subclass (kontext_engine/fp8_linear.py):
    # no subclass to unwrap in each compiled graph's prologue, regional or whole-model.
    "stack_scaled_mm": {**STACK, "fp8_linear": "scaled_mm"},
    "stack_full_scaled_mm": {**STACK, "fp8_linear": "scaled_mm", "compile": "full"},
    "stack_bf16": {**COMPILED_BF16, "cache_threshold": 0.08},
    # The peer, cache-dit's best configuration on the same pipeline (kontext_bench/peer_cache_dit.py): the
    # stack's cache threshold and FP8, the whole transformer compiled. Its inductor flags are process-wide:
    # run it last.
    "cache_dit": {"cache_threshold": 0.08, "fp8": True, "compile": "full"},
    "cache_dit_bf16": {"cache_threshold": 0.08, "compile": "full"},
}
# Variants run by another project's code instead of KontextEngine.load (same signature).
PEERS = {"cache_dit": CacheDitPeer.load, "cache_dit_bf16": CacheDitPeer.load}
SHAPES = {  # name: (width, height, edit?)
    "edit1024": (1024, 1024, True),
    "edit512": (512, 512, True),
    "edit256": (256, 256, True),  # the tiny model's CPU runs (fidelity sheet tests)
    "t2i1024": (1024, 1024, False),
    "t2i1008": (1008, 1008, False),  # 63x63 = 3969 image tokens: does not divide by 2 or 4 devices
}
TEXT_TOKENS = 512
PROMPT = "make it snowy, keep the composition"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_rates(device: torch.device, n: int = 8192, iters: int = 20) -> dict:
    """Dense bf16 and fp8 (row-wise scaled) matmul TFLOP/s on random data, CUDA events, median of iters."""
    if device.type != "cuda":
        return {}

    def timed(fn) -> float:
        for _ in range(3):
            fn()
        times = []
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return 2 * n**3 / statistics.median(times) / 1e12

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    rates = {"bf16_tflops": timed(lambda: a @ b)}
    a8, b8 = a.to(torch.float8_e4m3fn), b.t().contiguous().to(torch.float8_e4m3fn).t()
    scale_a = torch.ones(n, 1, device=device, dtype=torch.float32)
    scale_b = torch.ones(1, n, device=device, dtype=torch.float32)
    rates["fp8_tflops"] = timed(lambda: torch._scaled_mm(a8, b8, scale_a, scale_b, out_dtype=torch.bfloat16))
    return rates


def step_flops(config: dict, width: int, height: int, edit: bool) -> dict:
    """FLOPs of one transformer step: every token meets 12*d^2 weights per block; attention 4*S^2*d per block."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    blocks = config["num_layers"] + config["num_single_layers"]
    image_tokens = (width // 16) * (height // 16)
    tokens = image_tokens * (2 if edit else 1) + TEXT_TOKENS
    linear = 2 * tokens * blocks * 12 * d * d
    attention = blocks * 4 * tokens * tokens * d
    return {"tokens": tokens, "linear_tflop": linear / 1e12, "attention_tflop": attention / 1e12}


def make_request(width: int, height: int, edit: bool, steps: int, seed: int = 1234) -> EditRequest:
    image = decode_image(synthetic_image(width, height)) if edit else None  # fixed, non-trivial input
    return EditRequest(PROMPT, image, seed, steps, 2.5, width, height, "png")


class StepClock:
    """CUDA events at every step callback; classifies each step as computed or cached (First Block Cache)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.events: list = []
        self.computed: list[int] = []

    def __call__(self, indices, done: int, total: int) -> None:
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
        else:
            event = time.perf_counter()
        self.events.append(event)
        self.computed.append(_computed_steps_so_far(done))

    def reclassify(self, cached_steps: Sequence[int]) -> None:
        """For implementations that tell which steps (0-based) they skipped only after the call."""
        skipped = set(cached_steps)
        self.computed = list(itertools.accumulate(int(index not in skipped) for index in range(len(self.events))))

    def step_ms(self) -> tuple[list[float], list[float]]:
        """(full step times, cached step times) in ms, from the second step on."""
        full, cached = [], []
        for i in range(1, len(self.events)):
            if self.device.type == "cuda":
                ms = self.events[i - 1].elapsed_time(self.events[i])
            else:
                ms = (self.events[i] - self.events[i - 1]) * 1e3
            (full if self.computed[i] > self.computed[i - 1] else cached).append(ms)
        return full, cached


def _computed_steps_so_far(done: int) -> int:
    try:
        from para_attn.first_block_cache import utils as fbc
    except ImportError:
        return done
    context = fbc.get_current_cache_context()
    return getattr(context, "computed_steps", done) if context is not None else done


def fidelity(image: np.ndarray, reference: np.ndarray) -> dict:
    diff = image.astype(np.float64) - reference.astype(np.float64)
    mse = float(np.mean(diff**2))
    return {
        "psnr_db": math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse),
        "rel_l2": float(np.linalg.norm(diff) / max(np.linalg.norm(reference.astype(np.float64)), 1e-12)),
    }


def run_variant(name, delta, args, device, rates, references, gpus: int = 1) -> list[dict]:
    """Rows for one variant on `gpus` devices (context parallelism when > 1: this process is rank 0 on
    `device`, workers take the next devices)."""
    settings = replace(EngineSettings(model_source=args.source, dtype=args.dtype, compile_cache=False,
                                      context_parallel=gpus), **delta)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    worker_devices = [torch.device(device.type, (device.index or 0) + rank) if device.type == "cuda" else device
                      for rank in range(1, gpus)]
    started = time.perf_counter()
    engine = PEERS.get(name, KontextEngine.load)(settings, device, worker_devices=worker_devices)
    sync(device)
    load_s = time.perf_counter() - started
    log(f"{name} on {gpus} device(s): loaded and optimized in {load_s:.1f} s")
    rows = []
    try:
        for shape in args.shapes:
            width, height, edit = SHAPES[shape]
            started = time.perf_counter()
            engine.run([make_request(width, height, edit, steps=2)])  # compiles this shape's graphs
            sync(device)
            warmup_s = time.perf_counter() - started
            for steps in args.steps:
                request = make_request(width, height, edit, steps)
                times, full_ms, cached_ms, computed = [], [], [], []
                for _ in range(args.runs):
                    clock = StepClock(device)
                    sync(device)
                    started = time.perf_counter()
                    (result,) = engine.run([request], on_step=clock)
                    sync(device)
                    times.append(time.perf_counter() - started)
                    if isinstance(result, Exception):
                        raise result
                    if "cached_steps" in result.metadata:
                        clock.reclassify(result.metadata["cached_steps"])
                    full, cached = clock.step_ms()
                    full_ms += full
                    cached_ms += cached
                    computed.append(result.metadata["steps_computed"])
                image = np.asarray(Image.open(io.BytesIO(result.image)).convert("RGB"))
                key = (shape, steps)
                if name == "baseline" and gpus == 1:
                    references[key] = image
                if gpus == 1:
                    references[(name, shape, steps)] = image
                flops = step_flops(dict(engine.pipeline.transformer.config), width, height, edit)
                row = {
                    "variant": name,
                    "settings": delta,
                    "gpus": gpus,
                    "shape": shape,
                    "width": width,
                    "height": height,
                    "edit": edit,
                    "steps": steps,
                    "runs": args.runs,
                    "load_s": round(load_s, 2),
                    "warmup_s": round(warmup_s, 2),
                    "e2e_s": [round(t, 4) for t in times],
                    "e2e_median_s": round(statistics.median(times), 4),
                    "full_step_ms": round(statistics.median(full_ms), 2) if full_ms else None,
                    "cached_step_ms": round(statistics.median(cached_ms), 2) if cached_ms else None,
                    "steps_computed": computed,
                    **flops,
                }
                row.update(_efficiency(row, rates, settings))
                if device.type == "cuda":
                    row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                if key in references:
                    row.update({k: round(v, 4) for k, v in fidelity(image, references[key]).items()})
                if gpus > 1 and (name, shape, steps) in references:  # against the same variant on one device
                    row.update({f"{k}_vs_1gpu": round(v, 4)
                                for k, v in fidelity(image, references[(name, shape, steps)]).items()})
                rows.append(row)
                log(
                    f"{name} x{gpus} {shape} {steps} steps: {row['e2e_median_s']:.3f} s, full step {row['full_step_ms']} ms, "
                    f"cached {row['cached_step_ms']} ms, computed {computed}, psnr {row.get('psnr_db')}"
                )
    finally:
        engine.close()
        del engine
        gc.collect()
        torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _efficiency(row: dict, rates: dict, settings: EngineSettings) -> dict:
    if not rates or not row["full_step_ms"]:
        return {}
    seconds = row["full_step_ms"] / 1e3
    total = row["linear_tflop"] + row["attention_tflop"]
    bf16_floor = total / rates["bf16_tflops"]
    fp8_floor = row["linear_tflop"] / rates["fp8_tflops"] + row["attention_tflop"] / rates["bf16_tflops"]
    floor = (fp8_floor if settings.fp8 else bf16_floor) / settings.context_parallel  # the work split over the devices
    return {
        "achieved_tflops": round(total / seconds, 1),
        "ratio_to_bf16_peak": round(total / seconds / rates["bf16_tflops"], 3),
        "floor_ms": round(floor * 1e3, 1),
        "floor_kind": "fp8" if settings.fp8 else "bf16",
        "ratio_to_floor": round(seconds / floor, 3),
    }


def environment(device: torch.device) -> dict:
    import diffusers

    versions = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__}
    for package in ("torchao", "para_attn", "transformers"):
        try:
            versions[package] = __import__(package).__version__
        except Exception:
            versions[package] = None
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"card": card, "versions": versions, "date": datetime.datetime.now(datetime.timezone.utc).isoformat()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="random-full", help="random-full, embedded-tiny or a diffusers directory")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--variants", default="baseline,stack")
    parser.add_argument("--shapes", default="edit1024")
    parser.add_argument("--steps", default="28")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gpus", default="1", help="device counts to run each variant on, e.g. 1,2 (context parallel)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.shapes = args.shapes.split(",")
    args.steps = [int(s) for s in args.steps.split(",")]
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS] + [s for s in args.shapes if s not in SHAPES]
    if unknown:
        parser.error(f"unknown variants/shapes: {unknown}")
    if "baseline" in variants:  # references first, so every later variant gets fidelity figures
        variants.remove("baseline")
        variants.insert(0, "baseline")

    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:  # rank 0 of a group needs its index
        device = torch.device("cuda", torch.cuda.current_device())
    report = {**environment(device), "command": " ".join(sys.argv), "source": args.source, "rows": []}
    report["matmul"] = measure_matmul_rates(device)
    log(f"{report['card']}: {report['matmul']}")
    references: dict = {}
    for name in variants:
        for gpus in (int(g) for g in args.gpus.split(",")):
            try:
                report["rows"] += run_variant(name, VARIANTS[name], args, device, report["matmul"], references, gpus)
            except Exception as exc:  # record and go on: one broken variant must not lose the others
                log(f"{name} x{gpus} FAILED: {type(exc).__name__}: {exc}")
                report.setdefault("failures", {})[f"{name} x{gpus}"] = f"{type(exc).__name__}: {exc}"
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\n{'variant':28} {'gpus':>4} {'shape':9} {'steps':>5} {'e2e s':>8} {'full ms':>8} {'cached ms':>9} {'x floor':>7} {'psnr':>6}")
    for row in report["rows"]:
        print(f"{row['variant']:28} {row['gpus']:>4} {row['shape']:9} {row['steps']:>5} {row['e2e_median_s']:>8.3f} "
              f"{row['full_step_ms'] or 0:>8.1f} {row['cached_step_ms'] or 0:>9.1f} {row.get('ratio_to_floor', 0):>7.2f} "
              f"{row.get('psnr_db', float('nan')):>6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
