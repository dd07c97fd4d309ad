"""Writes perf_analyzer `--input-data` JSON for the flux_kontext model from real images and prompts.

BYTES tensors given as "b64" must be Triton's serialized form: each element is a 4-byte little-endian
length followed by its bytes, and the whole buffer is base64-encoded. Numbers use "content".

  python -m kontext_bench.input_data --image photo.png --prompt "make it snowy" --width 512 --height 512 \
      --steps 28 -o perf/data/edit512.json
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import struct
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image


def serialize_bytes_elements(elements: Sequence[bytes]) -> str:
    """Triton's wire format for a BYTES tensor, base64-encoded: [len:u32 LE][bytes] per element."""
    return base64.b64encode(b"".join(struct.pack("<I", len(e)) + e for e in elements)).decode("ascii")


def synthetic_image(width: int, height: int) -> bytes:
    """A deterministic, non-trivial PNG (gradient plus noise) for runs without a real image."""
    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    pixels = np.clip(gradient + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def request_entry(prompt: str, image: Optional[bytes], width: int, height: int, steps: int, seed: int) -> dict:
    entry = {
        "prompt": {"b64": serialize_bytes_elements([prompt.encode("utf-8")]), "shape": [1]},
        "width": {"content": [width], "shape": [1]},
        "height": {"content": [height], "shape": [1]},
        "steps": {"content": [steps], "shape": [1]},
        "seed": {"content": [seed], "shape": [1]},
    }
    if image is not None:
        entry["image"] = {"b64": serialize_bytes_elements([image]), "shape": [1]}
    return entry


def make_input_data(images: Sequence[Optional[bytes]], prompts: Sequence[str], width: int, height: int,
                    steps: int, seed: int = 1234) -> dict:
    """One entry per (image, prompt) pair, cycled by perf_analyzer across requests."""
    return {
        "data": [
            request_entry(prompt, image, width, height, steps, seed + i)
            for i, (image, prompt) in enumerate(zip(images, prompts))
        ]
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", action="append", type=Path, help="input image (repeatable); default: synthetic")
    parser.add_argument("--prompt", action="append", help="prompt (repeatable, paired with --image)")
    parser.add_argument("--text-to-image", action="store_true", help="send no image")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    prompts = args.prompt or ["make it snowy"]
    if args.text_to_image:
        images = [None] * len(prompts)
    elif args.image:
        images = [path.read_bytes() for path in args.image]
    else:
        images = [synthetic_image(args.width, args.height)]
    count = max(len(images), len(prompts))
    images = [images[i % len(images)] for i in range(count)]
    prompts = [prompts[i % len(prompts)] for i in range(count)]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(make_input_data(images, prompts, args.width, args.height, args.steps, args.seed)))
    print(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
