"""First Block Cache implementations side by side, on one pipeline in one process.

- `ours`: para-attn's decision rule over the engine's block loop (kontext_engine/first_block_cache.py)
- `diffusers`: diffusers' own FirstBlockCacheConfig hook (FluxKontextPipeline opens no cache context,
  so the call is wrapped in `transformer.cache_context`)
- `cache_dit`: cache-dit's DBCache with one front block and no back blocks (F1B0: the same family)

For each: the plain step (no cache), a step that misses (every block runs, plus the residual check:
threshold 1e-9) and a step that hits (the first block plus the cached residual: threshold 1e9, after
the implementation's warm-up steps); median transformer time per step between step callbacks (step 1,
which holds text and image encoding, is left out), and whether the output of a run that never hits
equals the plain one. Implementations run in the order plain, diffusers, cache_dit, ours, each removed
before the next (ours moves the blocks for good, so it runs last).

  python -m kontext_bench.cache_compare --source random-full --width 1024 --height 1024 --steps 10 --out cache.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import statistics
import time

import numpy as np
import torch

from kontext_bench.input_data import synthetic_image
from kontext_engine.codecs import decode_image
from kontext_engine.loading import load_pipeline, resolve_dtype

MISS, HIT = 1e-9, 1e9


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(pipeline, args, device, wrap=contextlib.nullcontext):
    """One edit; returns (per-step milliseconds from step 2 on, the image as an array)."""
    stamps = []

    def on_step(pipe, index, timestep, kwargs):
        sync(device)
        stamps.append(time.perf_counter())
        return kwargs

    image = decode_image(synthetic_image(args.width, args.height))
    with torch.inference_mode(), wrap():
        sync(device)
        stamps.append(time.perf_counter())
        output = pipeline(image=image, prompt="make it snowy", height=args.height, width=args.width,
                          max_area=args.width * args.height, _auto_resize=False, num_inference_steps=args.steps,
                          guidance_scale=2.5, generator=torch.Generator("cpu").manual_seed(0),
                          callback_on_step_end=on_step)
    steps_ms = [(b - a) * 1e3 for a, b in zip(stamps[1:], stamps[2:])]
    return steps_ms, np.asarray(output.images[0], dtype=np.int16)


def median(values):
    return round(statistics.median(values), 2) if values else None


def measure(name, pipeline, args, device, plain_image, enable, disable=lambda: None, wrap=contextlib.nullcontext,
            warmup_steps=1):
    """Miss and hit step times for one implementation; enable(threshold) installs it for one run."""
    row = {"implementation": name}
    for label, threshold in (("miss", MISS), ("hit", HIT)):
        enable(threshold)
        try:
            steps_ms, image = run(pipeline, args, device, wrap)
        finally:
            disable()
        if label == "miss":
            row["miss_step_ms"] = median(steps_ms)
            row["miss_equals_plain"] = bool(np.array_equal(image, plain_image))
            row["miss_max_abs_diff"] = int(np.abs(image - plain_image).max())
        else:
            row["hit_step_ms"] = median(steps_ms[warmup_steps:])
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="embedded-tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--implementations", default="diffusers,cache_dit,ours")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    pipeline = load_pipeline(args.source, device, resolve_dtype("auto", device))
    transformer = pipeline.transformer

    run(pipeline, args, device)  # warm-up: kernels, allocator
    plain_ms, plain_image = run(pipeline, args, device)
    rows = [{"implementation": "plain", "step_ms": median(plain_ms)}]
    print(json.dumps(rows[0]), flush=True)
    chosen = args.implementations.split(",")

    if "diffusers" in chosen:
        from diffusers.hooks import FirstBlockCacheConfig

        rows.append(measure(
            "diffusers", pipeline, args, device, plain_image,
            enable=lambda t: transformer.enable_cache(FirstBlockCacheConfig(threshold=t)),
            disable=transformer.disable_cache,
            wrap=lambda: transformer.cache_context("cond"),
        ))
    if "cache_dit" in chosen:
        import cache_dit
        from cache_dit import DBCacheConfig

        rows.append(measure(
            "cache_dit", pipeline, args, device, plain_image,
            enable=lambda t: cache_dit.enable_cache(pipeline, cache_config=DBCacheConfig(
                Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=t, max_warmup_steps=1)),
            disable=lambda: cache_dit.disable_cache(pipeline),
            warmup_steps=1,
        ))
    if "ours" in chosen:
        from kontext_engine.first_block_cache import cache_context, install_first_block_cache

        install_first_block_cache(transformer)
        exact_ms, exact_image = run(pipeline, args, device)  # installed, no context: every block
        rows.append({"implementation": "ours installed, exact", "step_ms": median(exact_ms),
                     "equals_plain": bool(np.array_equal(exact_image, plain_image))})
        print(json.dumps(rows[-1]), flush=True)
        threshold = {}
        rows.append(measure("ours", pipeline, args, device, plain_image, enable=lambda t: threshold.update(t=t),
                            wrap=lambda: cache_context(threshold["t"])))

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "card": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "versions": {"torch": torch.__version__, **_versions()},
        "source": args.source, "width": args.width, "height": args.height, "steps": args.steps,
        "rows": rows,
    }
    print(f"\n{'implementation':28} {'plain/exact':>12} {'miss':>10} {'hit':>10}  miss == plain")
    for row in rows:
        print(f"{row['implementation']:28} {row.get('step_ms') or '':>12} {row.get('miss_step_ms') or '':>10} "
              f"{row.get('hit_step_ms') or '':>10}  {row.get('miss_equals_plain', row.get('equals_plain', ''))}")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=1)
    return 0


def _versions() -> dict:
    from importlib import metadata

    found = {}
    for package in ("diffusers", "para-attn", "cache-dit"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


if __name__ == "__main__":
    raise SystemExit(main())
