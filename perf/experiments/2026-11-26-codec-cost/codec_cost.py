"""CPU cost of the work model.py does around the pipeline for one request: decode and fit the input
image, encode the result (PNG/JPEG/WebP), at the sizes we serve. Its share of a GPU request is this
cost over the measured end-to-end time (perf/NOTES.md).

  .venv/bin/python perf/experiments/2026-11-26-codec-cost/codec_cost.py --out perf/experiments/2026-11-26-codec-cost/cpu_codec_cost.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from kontext_engine.codecs import decode_image, encode_image, fit_to_size
from kontext_bench.input_data import synthetic_image


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1e3)
    return round(statistics.median(times), 2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = []
    for size in (512, 1024):
        y, x = np.mgrid[0:size, 0:size]
        smooth = Image.fromarray(np.stack([(x / 4) % 256, (y / 4) % 256, ((x + y) / 8) % 256], -1).astype(np.uint8))
        noisy = decode_image(synthetic_image(size, size))
        for content, image in (("noisy (worst case for PNG)", noisy), ("smooth gradients", smooth)):
            data = encode_image(image, "png")
            row = {
                "size": size,
                "content": content,
                "input_png_bytes": len(data),
                "decode_png_ms": median_ms(lambda: decode_image(data), args.repeats),
                "fit_to_half_size_ms": median_ms(lambda: fit_to_size(image, size // 2, size // 2), args.repeats),
            }
            for fmt in ("png", "jpeg", "webp"):
                row[f"encode_{fmt}_ms"] = median_ms(lambda fmt=fmt: encode_image(image, fmt), args.repeats)
            rows.append(row)
            print(row)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
        "command": " ".join(sys.argv),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
