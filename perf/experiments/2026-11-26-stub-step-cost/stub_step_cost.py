"""What running inside Triton's Python backend stub adds per denoising step (cancellation check and step
metric, both IPC to the server): the same request's `pipeline` time, in-process vs served.

  .venv/bin/python perf/experiments/2026-11-26-stub-step-cost/stub_step_cost.py --out perf/experiments/2026-11-26-stub-step-cost/cpu_stub_step_cost.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from kontext_client import KontextClient
from kontext_engine import EditRequest, KontextEngine
from kontext_engine.codecs import decode_image
from kontext_triton.server.process import TritonServer, free_ports
from kontext_triton.server.repository import write_repository
from kontext_bench.input_data import synthetic_image


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    png = synthetic_image(args.size, args.size)
    options = dict(width=args.size, height=args.size, steps=args.steps, seed=1)

    engine = KontextEngine.load()
    request = EditRequest("make it snowy", decode_image(png), 1, args.steps, 2.5, args.size, args.size, "png")
    in_process = [engine.run([request])[0].metadata["timings_ms"]["pipeline"] for _ in range(args.runs + 1)][1:]
    with tempfile.TemporaryDirectory() as scratch:
        repository = write_repository(Path(scratch) / "model_repository", models=("flux_kontext",))
        http_port, grpc_port, metrics_port = free_ports(3)
        with TritonServer(repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                          log_path=Path(scratch) / "server.log"), KontextClient(f"127.0.0.1:{grpc_port}") as client:
            served = [client.edit(png, "make it snowy", **options).metadata["timings_ms"]["pipeline"]
                      for _ in range(args.runs + 1)][1:]
    summary = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, embedded tiny model on CPU",
        "command": " ".join(sys.argv),
        "steps": args.steps,
        "in_process_pipeline_ms": in_process,
        "served_pipeline_ms": served,
        "extra_ms_per_step": round((statistics.median(served) - statistics.median(in_process)) / args.steps, 3),
    }
    args.out.write_text(json.dumps(summary, indent=1))
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
