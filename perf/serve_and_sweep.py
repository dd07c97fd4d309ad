"""Starts tritonserver on a copy of the model repository with overridden settings, runs a perf_analyzer
concurrency sweep, stops it; once per max_batch_size. Measures dynamic batching on vs off, and runs
the full stack end to end (e.g. model_source=random-full with the optimizations, on a GPU).

  .venv/bin/python perf/serve_and_sweep.py --max-batch-sizes 1,4 --width 256 --height 256 --steps 4 \
      --concurrency 1:4 --name cpu_batching
  python perf/serve_and_sweep.py --param model_source=random-full --param compile=regional \
      --param fuse_qkv=true --param warmup_shapes=1024x1024:edit --width 1024 --height 1024 --name gpu_stack
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kontext_engine.launcher import TritonServer, free_ports  # noqa: E402
from kontext_engine.repository import write_repository  # noqa: E402
from perf import sweep  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-batch-sizes", default="4", help="comma-separated; 1 = dynamic batching off")
    parser.add_argument("--param", action="append", default=[], help="KEY=VALUE config.pbtxt parameter override")
    parser.add_argument("--max-queue-delay-us", type=int, help="override dynamic_batching.max_queue_delay_microseconds")
    parser.add_argument("--ready-timeout", type=float, default=1800)
    parser.add_argument("--name", required=True)
    args, sweep_args = parser.parse_known_args(argv)
    parameters = dict(item.split("=", 1) for item in args.param)

    for max_batch_size in (int(n) for n in args.max_batch_sizes.split(",")):
        with tempfile.TemporaryDirectory() as scratch:
            def edit(config, size=max_batch_size):
                config.max_batch_size = size
                if args.max_queue_delay_us is not None:
                    config.dynamic_batching.max_queue_delay_microseconds = args.max_queue_delay_us

            repository = write_repository(Path(scratch) / "model_repository", parameters, edit=edit,
                                          models=("flux_kontext",))
            http_port, grpc_port, metrics_port = free_ports(3)
            log_path = Path(scratch) / "server.log"
            server = TritonServer(repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                                  log_path=log_path)
            try:
                server.start(args.ready_timeout)
                sweep.main([*sweep_args, "--url", server.grpc_url, "--metrics-url", f"{server.host}:{metrics_port}/metrics",
                            "--name", f"{args.name}/max_batch_{max_batch_size}"])
            except Exception:
                print(log_path.read_text()[-5000:] if log_path.exists() else "(no server log)", file=sys.stderr)
                raise
            finally:
                server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
