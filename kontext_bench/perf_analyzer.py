"""Runs the real perf_analyzer (from tritonclient[all]==2.51.0) and reads its verbose CSV.

perf_analyzer links libb64.so.0d and libcudart.so.12 even on a CPU machine. Both ship, under
hashed names, in the nvidia-pytriton wheel's nvidia_pytriton.libs/; we link them under their plain
names in a private directory and put it on LD_LIBRARY_PATH. Nothing is installed system-wide.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kontext_triton.server.install import wheel_libraries

_LIBRARIES = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12*"}


def binary() -> Path:
    found = shutil.which("perf_analyzer", path=str(Path(sys.executable).parent)) or shutil.which("perf_analyzer")
    if not found:
        raise FileNotFoundError("perf_analyzer not found: install tritonclient[all]==2.51.0 (./scripts/bootstrap.sh)")
    return Path(found)


def library_dir(cache_dir: Path) -> Path:
    """A directory with libb64.so.0d and libcudart.so.12 linked from the nvidia-pytriton wheel."""
    wheel_libs = wheel_libraries()
    target = cache_dir / "perf-analyzer-libs"
    target.mkdir(parents=True, exist_ok=True)
    for name, pattern in _LIBRARIES.items():
        matches = sorted(wheel_libs.glob(pattern))
        if not matches:
            raise FileNotFoundError(f"{pattern} not found in {wheel_libs}")
        link = target / name
        if not link.exists():
            link.symlink_to(matches[0])
    return target


def environment(cache_dir: Path) -> dict:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(library_dir(cache_dir)), env.get("LD_LIBRARY_PATH")) if p)
    return env


@dataclass
class Sweep:
    """One perf_analyzer invocation: a concurrency range or a Poisson request-rate range."""

    url: str
    protocol: str  # grpc | http
    input_data: Path
    csv_path: Path
    concurrency: Optional[str] = "1:2"  # start:end[:step]
    request_rate: Optional[str] = None  # start:end[:step] requests/s, Poisson arrivals
    batch_size: int = 1
    request_count: int = 10  # requests per count window: multi-second requests need count windows
    stability_percentage: int = 25
    max_trials: int = 10
    metrics_url: Optional[str] = None
    model: str = "flux_kontext"
    timeout_s: float = 3600

    def command(self) -> list[str]:
        command = [
            str(binary()), "-m", self.model, "-u", self.url, "-i", self.protocol, "-b", str(self.batch_size),
            "--input-data", str(self.input_data),
            "--measurement-mode", "count_windows", "--measurement-request-count", str(self.request_count),
            "--stability-percentage", str(self.stability_percentage), "--max-trials", str(self.max_trials),
            "-f", str(self.csv_path), "--verbose-csv",
        ]
        if self.request_rate:
            command += ["--request-rate-range", self.request_rate, "--request-distribution", "poisson"]
        else:
            command += ["--concurrency-range", self.concurrency]
        if self.metrics_url:
            command += ["--collect-metrics", "--metrics-url", self.metrics_url]
        return command

    def run(self, cache_dir: Path) -> list[dict]:
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(self.command(), env=environment(cache_dir), capture_output=True, text=True,
                              timeout=self.timeout_s)
        if done.returncode:
            raise RuntimeError(f"perf_analyzer failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return read_csv(self.csv_path)


def read_csv(path: Path) -> list[dict]:
    """Rows of perf_analyzer's verbose CSV, numbers as floats (latencies in us), ordered by load level.

    perf_analyzer writes rows sorted by throughput; the level (first column) is the natural order.
    With --collect-metrics on a GPU server, the GPU columns hold "GPU-<uuid>:<value>;" per GPU: those
    become {uuid: value} dicts.
    """
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        level = reader.fieldnames[0]
        rows = [{k: _cell(v) for k, v in row.items()} for row in reader]
    return sorted(rows, key=lambda row: row[level])


def _cell(text: Optional[str]):
    if text in ("", None):
        return None
    if ":" in text:
        return {gpu: float(value) for gpu, _, value in (item.rpartition(":") for item in text.split(";") if item)}
    return float(text)


def mean_gpu_utilization(row: dict) -> Optional[float]:
    """Average GPU utilization (0..1) over the server's GPUs, when perf_analyzer collected it."""
    per_gpu = row.get("Avg GPU Utilization")
    return sum(per_gpu.values()) / len(per_gpu) if per_gpu else None


SERVER_PARTS = ("Server Queue", "Server Compute Input", "Server Compute Infer", "Server Compute Output")


def overhead_fraction(row: dict) -> float:
    """Share of the client-side average latency that is not the model's own compute (Server Compute Infer)."""
    return 1.0 - row["Server Compute Infer"] / row["Avg latency"]
