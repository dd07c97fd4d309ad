"""Start to ready of the shipped model repository (both models, cpu-smoke profile), with and without
Triton's config auto-complete, alternating, on this machine.

  .venv/bin/python perf/experiments/2026-11-27-auto-complete/auto_complete.py [rounds]
"""

import sys
import tempfile
import time
from pathlib import Path

from kontext_triton.server.process import TritonServer, free_ports

FLAG = "--disable-auto-complete-config"


class WithAutoComplete(TritonServer):
    """The server as it was started before: Triton asks each Python model's model.py for its config."""

    def command(self, install):
        return [argument for argument in super().command(install) if argument != FLAG]


def ready_s(server_class, log: Path) -> float:
    http, grpc, metrics = free_ports(3)
    server = server_class(http_port=http, grpc_port=grpc, metrics_port=metrics, log_path=log)
    started = time.monotonic()
    server.start(timeout_s=300)
    ready = time.monotonic() - started
    server.stop()
    return ready


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(1, rounds + 1):
            for name, server_class in (("auto-complete on", WithAutoComplete), ("auto-complete off", TritonServer)):
                seconds = ready_s(server_class, Path(scratch) / f"{round_}-{name}.log")
                print(f"round {round_}: {name}: ready in {seconds:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
