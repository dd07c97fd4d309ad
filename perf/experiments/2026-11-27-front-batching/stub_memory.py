"""Resident memory of each stub of the shipped repository (tiny model, on a CPU), once ready.

  .venv/bin/python perf/experiments/2026-11-27-front-batching/stub_memory.py
"""

import tempfile
import time
from pathlib import Path

from kontext_triton.server.process import TritonServer, free_ports
from kontext_triton.server.repository import write_repository
from kontext_triton.server.watchdog import stub_processes


def resident_mib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) // 1024


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        repository = write_repository(Path(scratch) / "model_repository", {})
        http_port, grpc_port, metrics_port = free_ports(3)
        started = time.monotonic()
        with TritonServer(repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                          log_path=Path(scratch) / "server.log"):
            print(f"ready in {time.monotonic() - started:.1f} s")
            for model, pids in sorted(stub_processes(repository).items()):
                print(f"{model}: {len(pids)} stub(s), resident MiB {[resident_mib(pid) for pid in pids]}")


if __name__ == "__main__":
    main()
