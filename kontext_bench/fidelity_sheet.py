"""A fidelity sheet: what each speed-up does to the images, at a glance.

For a fixed set of edits (prompt + input image, the same seed), one PNG grid per shape: a row per edit,
the input first, then the reference variant (eager, the model's own dtype) and every other variant,
each tile captioned with its PSNR and relative L2 against the reference and the steps it computed (First
Block Cache skips steps). Numbers also go to fidelity.json. On random or tiny weights the images are
noise and the figures say only that the code paths agree; on real weights they are the price of each
speed-up:

  python -m kontext_bench.fidelity_sheet --source /models/FLUX.1-Kontext-dev \\
      --variants baseline,fbcache_0.08,fbcache_0.12,compiled_bf16,fp8 --shapes edit1024 --out perf/results/fidelity

A variant this device cannot run (FP8 on a CPU) is listed in fidelity.json under "skipped".
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from kontext_bench.bench_inprocess import SHAPES, VARIANTS, environment, fidelity
from kontext_engine import EditRequest, KontextEngine
from kontext_engine.optimizations import UnsupportedOption
from kontext_engine.settings import EngineSettings

REFERENCE = "baseline"
EDITS = (  # (prompt, scene colours: sky, sun, ground, house)
    ("make it snowy", ((110, 170, 235), (250, 210, 60), (70, 140, 60), (170, 60, 50))),
    ("turn it into a watercolor painting", ((240, 150, 90), (255, 240, 200), (150, 120, 70), (60, 80, 150))),
    ("make it night time with a full moon", ((90, 200, 220), (255, 255, 255), (200, 180, 120), (90, 90, 90))),
)
SEED = 1234
TILE = 256  # pixels per tile side
CAPTION = 34  # pixels of caption under each tile


def scene(width: int, height: int, colours) -> Image.Image:
    """A small synthetic picture (sky, sun, ground, house) with structure an edit can change."""
    sky, sun, ground, house = colours
    image = Image.new("RGB", (width, height), sky)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height * 2 // 3, width, height), fill=ground)
    draw.ellipse((width * 0.7, height * 0.1, width * 0.85, height * 0.1 + width * 0.15), fill=sun)
    draw.rectangle((width * 0.2, height * 0.45, width * 0.45, height * 0.7), fill=house)
    draw.polygon([(width * 0.17, height * 0.45), (width * 0.325, height * 0.3), (width * 0.48, height * 0.45)],
                 fill=tuple(c // 2 for c in house))
    return image


def edits(width: int, height: int, edit: bool, steps: int, images_dir: Path | None) -> list[EditRequest]:
    """The fixed edits at one shape; with images_dir, its first images (sorted) replace the scenes."""
    inputs = [scene(width, height, colours) for _, colours in EDITS]
    if images_dir is not None:
        files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
        inputs = [Image.open(p).convert("RGB").resize((width, height)) for p in files[:len(EDITS)]] or inputs
    return [EditRequest(prompt, image if edit else None, SEED, steps, 2.5, width, height, "png")
            for (prompt, _), image in zip(EDITS, inputs)]


def render(variants: list[str], settings_of, device: torch.device, requests: list[EditRequest]) -> tuple[dict, dict]:
    """{variant: [(image array, steps computed), ...]} for every variant this device runs; {variant: why} else."""
    outputs, skipped = {}, {}
    for name in variants:
        try:
            engine = KontextEngine.load(settings_of(name), device)
        except UnsupportedOption as exc:
            skipped[name] = str(exc)
            continue
        results = [engine.generate([request])[0] for request in requests]
        outputs[name] = [(np.asarray(Image.open(io.BytesIO(r.image)).convert("RGB")), r.metadata["steps_computed"])
                         for r in results]
        del engine
        gc.collect()
        torch._dynamo.reset()
    return outputs, skipped


def caption(name: str, figures: dict | None, computed: int, steps: int) -> str:
    quality = "reference" if figures is None else (
        "identical" if figures["psnr_db"] == math.inf else f"{figures['psnr_db']:.1f} dB  {figures['rel_l2']:.2%}")
    return f"{name}\n{quality}  {computed}/{steps} steps"


def sheet(requests: list[EditRequest], outputs: dict) -> tuple[Image.Image, list[dict]]:
    """The grid (rows: edits; columns: input, then each variant) and the figures under its tiles."""
    columns = (["input"] if requests[0].image is not None else []) + list(outputs)
    grid = Image.new("RGB", (TILE * len(columns), (TILE + CAPTION) * len(requests)), "white")
    draw = ImageDraw.Draw(grid)
    rows = []
    for row, request in enumerate(requests):
        top = row * (TILE + CAPTION)
        for column, name in enumerate(columns):
            if name == "input":
                tile, text = request.image, f"input\n{request.prompt[:34]}"
            else:
                pixels, computed = outputs[name][row]
                figures = None if name == REFERENCE else fidelity(pixels, outputs[REFERENCE][row][0])
                tile, text = Image.fromarray(pixels), caption(name, figures, computed, request.steps)
                rows.append({"edit": request.prompt, "variant": name, "steps_computed": computed,
                             "steps": request.steps, **(figures or {})})
            grid.paste(tile.resize((TILE, TILE)), (column * TILE, top))
            draw.multiline_text((column * TILE + 4, top + TILE + 2), text, fill="black", spacing=2)
    return grid, rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="embedded-tiny", help="embedded-tiny, random-full or a diffusers directory")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", default="baseline,fbcache_0.08,fbcache_0.12")
    parser.add_argument("--shapes", default="edit1024")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--images", type=Path, help="a directory of input images to use instead of the scenes")
    parser.add_argument("--out", type=Path, required=True, help="directory for fidelity_<shape>.png and fidelity.json")
    args = parser.parse_args(argv)
    variants = [REFERENCE] + [v for v in args.variants.split(",") if v != REFERENCE]
    unknown = [v for v in variants if v not in VARIANTS] + [s for s in args.shapes.split(",") if s not in SHAPES]
    if unknown:
        parser.error(f"unknown variants/shapes: {unknown}")
    device = torch.device(args.device)

    def settings_of(name: str) -> EngineSettings:
        return replace(EngineSettings(model_source=args.source, compile_cache=False), **VARIANTS[name])

    args.out.mkdir(parents=True, exist_ok=True)
    report = {**environment(device), "source": args.source, "seed": SEED, "command": " ".join(sys.argv),
              "shapes": {}, "skipped": {}}
    for shape in args.shapes.split(","):
        width, height, edit = SHAPES[shape]
        requests = edits(width, height, edit, args.steps, args.images)
        outputs, report["skipped"] = render(variants, settings_of, device, requests)
        grid, rows = sheet(requests, outputs)
        grid.save(args.out / f"fidelity_{shape}.png")
        report["shapes"][shape] = rows
        print(f"{shape}: {args.out / f'fidelity_{shape}.png'}")
        for row in rows:
            print(f"  {row['variant']:24} {row['edit'][:36]:36} psnr {row.get('psnr_db', '-')} "
                  f"rel_l2 {row.get('rel_l2', '-')} steps {row['steps_computed']}/{row['steps']}")
    (args.out / "fidelity.json").write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
