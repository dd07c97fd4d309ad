"""Starts tritonserver on a copy of the model repository with overridden settings, runs one or more
perf_analyzer sweeps against it, stops it; once per max_batch_size. Measures dynamic batching on vs
off, and runs the full stack end to end (e.g. model_source=random-full with the optimizations, on a GPU).

  .venv/bin/python -m kontext_bench.serve_and_sweep --max-batch-sizes 1,4 --name cpu_batching \
      --sweep "--width 256 --height 256 --steps 4 --concurrency 1:4"
  python -m kontext_bench.serve_and_sweep --param model_source=random-full --param compile=regional \
      --param fuse_qkv=true --param warmup_shapes=1024x1024:edit,512x512:edit --name gpu_stack \
      --sweep "--width 1024 --height 1024 --concurrency 1:2" --sweep "--width 512 --height 512 --concurrency 1:4"

Each sweep writes perf/results/<name>/max_batch_<N>/<W>x<H>[_t2i]/ (see kontext_bench/sweep.py); beside them,
server.json holds the server's start-up time (process start to ready: load, optimize, warm-up) and
server.log its log.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tritonclient.grpc import model_config_pb2

from kontext_triton.server.process import TritonServer, free_ports
from kontext_triton.server.repository import write_repository
from kontext_bench import sweep


def sweep_label(sweep_args: list[str]) -> str:
    args = sweep.parser().parse_args([*sweep_args, "--name", "-"])
    return f"{args.width}x{args.height}" + ("_t2i" if args.text_to_image else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-batch-sizes", default="4", help="comma-separated; 1 = dynamic batching off")
    parser.add_argument("--param", action="append", default=[], help="KEY=VALUE config.pbtxt parameter override")
    parser.add_argument("--max-queue-delay-us", type=int, help="override dynamic_batching.max_queue_delay_microseconds")
    parser.add_argument("--instance-kind", help="the pipeline model's instance kind, e.g. KIND_MODEL for "
                                                "context_parallel > 1 on GPUs (default: the repository's)")
    parser.add_argument("--instance-count", type=int,
                        help="the pipeline model's instance count (per GPU with KIND_GPU or KIND_AUTO on GPUs), e.g. 2 "
                             "with KIND_MODEL and context_parallel=2 on 4 GPUs: two groups on disjoint GPU pairs "
                             "(default: the repository's)")
    parser.add_argument("--forwarders", type=int,
                        help="the unary front's instance count (default: the repository's); with more than two "
                             "pipeline instances, instances x max_batch_size")
    parser.add_argument("--ready-timeout", type=float, default=1800)
    parser.add_argument("--sweep", action="append", required=True,
                        help="kontext_bench/sweep.py arguments of one sweep, quoted; repeatable, run in order")
    parser.add_argument("--card", default="", help="what the server runs on, for the reports")
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    parameters = dict(item.split("=", 1) for item in args.param)
    sweeps = [shlex.split(s) for s in args.sweep]
    labels = [sweep_label(s) for s in sweeps]  # refuses bad sweep arguments before any server starts

    for max_batch_size in (int(n) for n in args.max_batch_sizes.split(",")):
        folder = sweep.RESULTS / args.name / f"max_batch_{max_batch_size}"
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as scratch:
            def edit(config, size=max_batch_size):
                config.max_batch_size = size
                if args.max_queue_delay_us is not None:
                    config.dynamic_batching.max_queue_delay_microseconds = args.max_queue_delay_us
                if "pipeline_model" in config.parameters:  # the unary front
                    if args.forwarders:
                        config.instance_group[0].count = args.forwarders
                    return
                if args.instance_kind:
                    config.instance_group[0].kind = model_config_pb2.ModelInstanceGroup.Kind.Value(args.instance_kind)
                if args.instance_count:
                    config.instance_group[0].count = args.instance_count

            repository = write_repository(Path(scratch) / "model_repository", parameters, edit=edit)
            http_port, grpc_port, metrics_port = free_ports(3)
            log_path = Path(scratch) / "server.log"
            server = TritonServer(repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                                  log_path=log_path)
            try:
                started = time.monotonic()
                server.start(args.ready_timeout)
                ready_s = time.monotonic() - started
                print(f"max_batch_size {max_batch_size}: server ready in {ready_s:.1f} s", flush=True)
                (folder / "server.json").write_text(json.dumps(
                    {"max_batch_size": max_batch_size, "parameters": parameters, "ready_s": round(ready_s, 1),
                     "card": args.card or "not stated", "forwarders": args.forwarders or "the repository's",
                     "instance_kind": args.instance_kind or "the repository's",
                     "instance_count": args.instance_count or "the repository's"}, indent=1))
                for sweep_args, label in zip(sweeps, labels):
                    sweep.main([*sweep_args, "--url", server.grpc_url, "--card", args.card,
                                "--metrics-url", f"{server.host}:{metrics_port}/metrics",
                                "--name", f"{args.name}/max_batch_{max_batch_size}/{label}"])
            except Exception:
                print(log_path.read_text()[-5000:] if log_path.exists() else "(no server log)", file=sys.stderr)
                raise
            finally:
                server.stop()
                if log_path.exists():
                    shutil.copy(log_path, folder / "server.log")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
