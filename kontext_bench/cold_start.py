"""Cold start (process start to ready-to-serve) with and without the persisted compile-artifact cache.

Each start is a fresh process with an empty TorchInductor cache directory, as in a new container:
the first start compiles and saves the artifacts, the second loads them before its warm-up.

  python -m kontext_bench.cold_start --variant compiled_bf16 --warmup 1024x1024:edit --out results/cold.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path



def child(settings: dict, max_batch_size: int) -> None:
    import logging

    import torch

    from kontext_engine import KontextEngine
    from kontext_engine.settings import EngineSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")  # the engine's phases
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    KontextEngine.load(EngineSettings(**settings), device, max_batch_size)
    torch.cuda.synchronize() if device.type == "cuda" else None
    print(json.dumps({"ready_in_process_s": time.perf_counter() - started}), flush=True)


def start_once(settings: dict, label: str, max_batch_size: int = 1) -> dict:
    """One start in a fresh process; its log goes to this one's stderr as it happens (a start stopped
    by a time limit still shows how far it got)."""
    inductor_dir = tempfile.mkdtemp(prefix="inductor-")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": inductor_dir, "PYTHONUNBUFFERED": "1"}
    print(f"{label}: starting", file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kontext_bench.cold_start", "--child", json.dumps(settings),
                           "--max-batch-size", str(max_batch_size)],
                          env=env, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{label} failed with exit status {done.returncode} (its log is above)")
    inner = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{label}: process start to ready {wall:.1f} s (load+optimize+warm-up {inner['ready_in_process_s']:.1f} s)",
          flush=True)
    return {"label": label, "wall_s": round(wall, 2), **{k: round(v, 2) for k, v in inner.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--source", default="random-full")
    parser.add_argument("--variant", default="compiled_bf16")
    parser.add_argument("--warmup", default="1024x1024:edit")
    parser.add_argument("--max-batch-size", type=int, default=1, help="the warm-up compiles for batches up to this")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--skip-uncached", action="store_true",
                        help="skip the start without an artifact cache (for a variant whose compile is long)")
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child), args.max_batch_size)
        return 0

    from kontext_bench.bench_inprocess import VARIANTS, environment

    import torch

    artifacts = tempfile.mkdtemp(prefix="compile-artifacts-")
    settings = {"model_source": args.source, "warmup_shapes": args.warmup, "warmup_steps": 2,
                "compile_cache_dir": artifacts, **VARIANTS[args.variant]}
    batch = args.max_batch_size
    rows = [] if args.skip_uncached else [start_once({**settings, "compile_cache": False}, "no artifact cache", batch)]
    rows.append(start_once(settings, "artifact cache empty (compiles, saves)", batch))
    saved = sum(p.stat().st_size for p in Path(artifacts).glob("*.bin"))
    rows.append(start_once(settings, "artifact cache loaded", batch))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report = {**environment(device), "command": " ".join(sys.argv), "variant": args.variant,
              "settings": settings, "max_batch_size": batch, "artifact_bytes": saved, "starts": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
