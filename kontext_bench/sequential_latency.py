"""Sequential requests at concurrency 1 against a running server: the latency distribution an idle
server gives, outliers included. Used to measure the dynamic batcher's idle wake-up (perf/NOTES.md).

  .venv/bin/python -m kontext_bench.sequential_latency --url 127.0.0.1:8001 --count 300 --label queue_policy \
      --out perf/experiments/2026-11-26-idle-wakeup/results/queue_policy.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

from kontext_client import KontextClient
from kontext_bench.input_data import synthetic_image


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="127.0.0.1:8001")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--label", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    image = synthetic_image(args.size, args.size)
    latencies = []
    with KontextClient(args.url, args.protocol) as client:
        client.edit(image, "warm-up", width=args.size, height=args.size, steps=args.steps)
        for _ in range(args.count):
            started = time.perf_counter()
            client.edit(image, "make it snowy", width=args.size, height=args.size, steps=args.steps)
            latencies.append((time.perf_counter() - started) * 1e3)
    ordered = sorted(latencies)
    summary = {
        "label": args.label,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "count": args.count,
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 2),
        "max_ms": round(ordered[-1], 2),
        "over_100ms": sum(lat > 100 for lat in latencies),
        "latencies_ms": [round(lat, 2) for lat in latencies],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print({k: v for k, v in summary.items() if k != "latencies_ms"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
