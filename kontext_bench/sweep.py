"""One command: perf_analyzer sweeps against a running server, then CSV -> markdown table + PNG charts.

  .venv/bin/python -m kontext_bench.sweep --url 127.0.0.1:8001 --protocol grpc --width 512 --height 512 --steps 28 \
      --concurrency 1:4 --request-rate 0.1:0.4:0.1 --name gpu_edit512

Writes perf/results/<name>/{input.json, concurrency.csv, request_rate.csv, report.md, *.png}.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from kontext_client import KontextClient
from kontext_engine.loading import default_cache_dir
from kontext_bench.input_data import make_input_data, synthetic_image
from kontext_bench.perf_analyzer import Sweep
from kontext_bench.report_sweep import write_report

RESULTS = Path(__file__).resolve().parent.parent / "perf" / "results"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="127.0.0.1:8001")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--metrics-url", default="127.0.0.1:8002/metrics", help="empty to skip metrics")
    parser.add_argument("--image", type=Path, help="input image; default: a synthetic one")
    parser.add_argument("--text-to-image", action="store_true")
    parser.add_argument("--prompt", default="make it snowy")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--concurrency", default="1:4", help="start:end[:step]; empty to skip")
    parser.add_argument("--request-rate", default="", help="start:end[:step] req/s, Poisson; empty to skip")
    parser.add_argument("--request-count", type=int, default=10, help="requests per measurement window")
    parser.add_argument("--stability", type=int, default=25,
                        help="max %% spread across 3 windows (Poisson arrivals on a busy 2-core CPU need ~50)")
    parser.add_argument("--name", required=True, help="results folder under perf/results/")
    parser.add_argument("--card", default="", help="what the server ran on, for the report (e.g. 'H100 80GB')")
    return parser


def main(argv=None) -> int:
    args = parser().parse_args(argv)

    folder = RESULTS / args.name
    folder.mkdir(parents=True, exist_ok=True)
    image = None if args.text_to_image else (args.image.read_bytes() if args.image else synthetic_image(args.width, args.height))
    input_path = folder / "input.json"
    input_path.write_text(json.dumps(make_input_data([image], [args.prompt], args.width, args.height, args.steps)))

    common = dict(url=args.url, protocol=args.protocol, input_data=input_path, request_count=args.request_count,
                  stability_percentage=args.stability, metrics_url=args.metrics_url or None)
    sweeps = {}
    if args.concurrency:
        sweeps["concurrency"] = Sweep(**common, csv_path=folder / "concurrency.csv", concurrency=args.concurrency)
    if args.request_rate:
        sweeps["request_rate"] = Sweep(**common, csv_path=folder / "request_rate.csv", request_rate=args.request_rate)
    # One request first, so the first measurement window does not include a cold start; its metadata
    # (pipeline vs encode time on the server) goes into the report.
    with KontextClient(args.url, args.protocol) as client:
        options = dict(width=args.width, height=args.height, steps=args.steps)
        first = client.generate(args.prompt, **options) if image is None else client.edit(image, args.prompt, **options)
    results = {kind: sweep.run(default_cache_dir()) for kind, sweep in sweeps.items()}
    context = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "card": args.card or "not stated",
        "request": {"width": args.width, "height": args.height, "steps": args.steps,
                    "mode": "text-to-image" if image is None else "edit"},
        "commands": {kind: " ".join(sweep.command()) for kind, sweep in sweeps.items()},
        "first_request_metadata": first.metadata,
    }
    print(write_report(folder, results, context))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
