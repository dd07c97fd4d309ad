"""Which dynamic_batching field makes Triton 2.51 delay requests that reach an idle server by ~0.5 s?

Starts the server once per variant of flux_kontext's dynamic_batching block (the embedded tiny model)
and sends sequential requests with kontext_bench/sequential_latency.py; one JSON per variant.

  .venv/bin/python perf/experiments/2026-11-26-idle-wakeup/idle_wakeup.py --out perf/experiments/2026-11-26-idle-wakeup/results/by_field
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from kontext_triton.server.process import TritonServer, free_ports
from kontext_triton.server.repository import write_repository
from kontext_bench import sequential_latency

_PRIORITY = ("priority_levels", "default_priority_level")
_TIMEOUT = ("default_timeout_microseconds", "allow_timeout_override", "timeout_action")


def _clear(message, fields) -> None:
    for name in fields:
        message.ClearField(name)


VARIANTS = {  # name: edit of config.dynamic_batching
    "as_shipped": lambda batching: None,
    "no_priority_no_policy": lambda batching: _clear(batching, (*_PRIORITY, "default_queue_policy")),
    "priority_only": lambda batching: _clear(batching, ("default_queue_policy",)),
    "policy_only": lambda batching: _clear(batching, _PRIORITY),
    "queue_size_only": lambda batching: (_clear(batching, _PRIORITY), _clear(batching.default_queue_policy, _TIMEOUT)),
    "timeout_only": lambda batching: (_clear(batching, _PRIORITY),
                                      _clear(batching.default_queue_policy, ("max_queue_size",))),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.variants.split(","):
        with tempfile.TemporaryDirectory() as scratch:
            repository = write_repository(Path(scratch) / "model_repository", models=("flux_kontext",),
                                          edit=lambda config, name=name: VARIANTS[name](config.dynamic_batching))
            http_port, grpc_port, metrics_port = free_ports(3)
            with TritonServer(repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                              log_path=Path(scratch) / "server.log"):
                sequential_latency.main(["--url", f"127.0.0.1:{grpc_port}", "--count", str(args.count),
                                         "--label", name, "--out", str(args.out / f"{name}.json")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
