"""Triton Model Analyzer over flux_kontext: instance count and batching, on this machine's tritonserver.

Model Analyzer launches tritonserver itself (local launch mode) from this installation (the wheel's server
and backend stub, or /opt/tritonserver), so it may load each candidate configuration; kontext-serve's
restricted control plane is not in its way, and nothing else is exposed (loopback only). Model Analyzer
runs from its own environment (its dependencies clash with the project's), at the pin in pyproject.toml:

  .venv/bin/uv tool run --from triton-model-analyzer==1.46.0 true   # once: fetch it
  .venv/bin/python -m kontext_bench.model_analyzer --out perf/results/cpu_model_analyzer            # CPU, tiny model
  .venv/bin/python -m kontext_bench.model_analyzer --gpu --width 1024 --height 1024 --steps 28 --out ...  # a GPU host
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from kontext_bench import perf_analyzer
from kontext_triton.server.install import find_triton
from kontext_triton.server.process import DEFAULT_MODEL_REPOSITORY, default_cache_dir

MODEL_ANALYZER = "triton-model-analyzer==1.46.0"


def config(args, scratch: Path, input_data: Path) -> dict:
    install = find_triton(default_cache_dir())
    library_path = [str(p) for p in install.library_dirs] + [str(perf_analyzer.library_dir(default_cache_dir()))]
    kind = "KIND_GPU" if args.gpu else "KIND_CPU"
    model = {
        "parameters": {"concurrency": args.concurrency},
        "model_config_parameters": {
            "max_batch_size": args.max_batch_sizes,
            "instance_group": [{"kind": kind, "count": args.instance_counts}],
        },
    }
    if not args.gpu:
        model["cpu_only"] = True
    result = {
        "model_repository": str(DEFAULT_MODEL_REPOSITORY),
        "output_model_repository_path": str(scratch / "output_models"),
        "override_output_model_repository": True,
        "checkpoint_directory": str(scratch / "checkpoints"),
        "export_path": str(scratch / "export"),
        "triton_launch_mode": "local",
        "triton_server_path": str(install.server),
        "triton_server_flags": {"backend-directory": str(install.backend_dir), "http-address": "127.0.0.1",
                                "grpc-address": "127.0.0.1", "metrics-address": "127.0.0.1"},
        "triton_server_environment": {
            "LD_LIBRARY_PATH": os.pathsep.join(library_path),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),  # the stub finds this venv
            "KONTEXT_CACHE_DIR": str(default_cache_dir()),
            **({"KONTEXT_SETTING_PROFILE": args.profile} if args.profile else {}),
        },
        "perf_analyzer_path": str(perf_analyzer.binary()),
        # a 1024x1024 batch-4 request takes ~34 s on an H100: count windows of several, not 600 s
        "perf_analyzer_timeout": 3600,
        "client_protocol": "grpc",
        "run_config_search_disable": True,
        "profile_models": {"flux_kontext": model},
        "perf_analyzer_flags": {"input-data": str(input_data), "measurement-mode": "count_windows",
                                "measurement-request-count": args.request_count, "stability-percentage": 1000,
                                "max-trials": 3},
    }
    if args.gpu:  # two instances of the 12 B model on one 80 GB card do not fit: bound what is kept
        result["constraints"] = {"gpu_used_memory": {"max": args.gpu_memory_mb}}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="KIND_GPU instances (default: the CPU, tiny model)")
    parser.add_argument("--profile", help="engine profile for the server (KONTEXT_SETTING_PROFILE)")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--instance-counts", type=int, nargs="+", default=[1])
    parser.add_argument("--request-count", type=int, default=20)
    parser.add_argument("--gpu-memory-mb", type=int, default=76000)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="model-analyzer-") as scratch:
        scratch = Path(scratch)
        input_data = args.out / "input.json"
        subprocess.run([sys.executable, "-m", "kontext_bench.input_data", "--width", str(args.width), "--height",
                        str(args.height), "--steps", str(args.steps), "-o", str(input_data)], check=True)
        config_path = args.out / "model_analyzer.yaml"
        config_path.write_text(yaml.safe_dump(config(args, scratch, input_data), sort_keys=False))
        uv = Path(sys.executable).parent / "uv"
        env = {**os.environ, "LD_LIBRARY_PATH": str(perf_analyzer.library_dir(default_cache_dir()))}
        done = subprocess.run([str(uv), "tool", "run", "--from", MODEL_ANALYZER, "model-analyzer", "profile",
                               "-f", str(config_path)], env=env, timeout=args.timeout)
        for csv in (scratch / "export" / "results").glob("*.csv"):
            shutil.copy(csv, args.out / csv.name)
        for report in (scratch / "export" / "reports" / "summaries").glob("*/result_summary.*"):
            shutil.copy(report, args.out / report.name)
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
