"""The server with both models, started on one cache volume: empty, then warm (or, on a given volume,
as many times as asked, each start labelled by what the volume held).

Each start is a fresh tritonserver on a copy of the model repository (both models: the unary front and
the pipeline model), with the compile-artifact cache and TorchInductor's cache on one directory, as on
the deployment's cache volume. For each start it records process start to ready (weights, optimization,
warm-up), the GPU memory each process holds once ready (one copy of the pipeline, whatever APIs are
loaded), and one unary (gRPC infer(), through the front) and one streaming request.

  python -m kontext_bench.server_start --param profile=gpu-fp8 --param model_source=random-full \
      --param warmup_shapes=1024x1024:edit --max-batch-size 4 --size 1024 --out perf/results/x/server_start.json
  ... --cache-volume /tmp/volume --starts 1    # one more start on a volume an earlier run left

Each start's row also says what the engine made of the volume's artifacts for its key (loaded, absent,
unreadable) and whether it saved them again.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from PIL import Image

from kontext_client import EditResult, KontextClient
from kontext_triton.server.process import TritonServer, free_ports
from kontext_triton.server.repository import write_repository
from kontext_triton.server.watchdog import stub_processes


def gpu_memory(repository: Path) -> dict:
    """MiB of GPU memory per model (its stubs' processes) and in all, from nvidia-smi."""
    try:
        apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, check=True).stdout
        used = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"note": "no nvidia-smi"}
    owner = {pid: model for model, pids in stub_processes(repository).items() for pid in pids}
    per_model: dict[str, int] = {}
    for line in apps.strip().splitlines():
        pid, mib = (int(field) for field in line.split(","))
        model = owner.get(pid, f"pid {pid} (not a stub of this server)")
        per_model[model] = per_model.get(model, 0) + mib
    return {"per_model_mib": per_model, "gpus_used_mib": [int(v) for v in used.split()]}


def requests_through_both_apis(server: TritonServer, size: int) -> dict:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (90, 120, 200)).save(buffer, format="PNG")
    image = buffer.getvalue()
    started = time.perf_counter()
    with KontextClient(server.grpc_url, timeout_s=600) as client:  # infer(): through the unary front
        unary = client.edit(image, "make it snowy", width=size, height=size, seed=1)
    unary_s = time.perf_counter() - started
    started, progress, streamed = time.perf_counter(), 0, None
    with KontextClient(server.grpc_url) as client:
        for event in client.stream_edit(image, "make it snowy", width=size, height=size, seed=1):
            if isinstance(event, EditResult):
                streamed = event
            else:
                progress += 1
    return {"unary_grpc_s": round(unary_s, 2), "stream_grpc_s": round(time.perf_counter() - started, 2),
            "stream_progress_events": progress, "same_image": unary.image.tobytes() == streamed.image.tobytes()}


def artifacts_outcome(log: str) -> dict:
    """What the pipeline model's engine logged about its compile artifacts at this start."""
    loaded = re.findall(r"compile artifacts (loaded|absent|unreadable) in", log)
    saved = re.findall(r"compile artifacts (saved|unchanged)", log)
    return {"artifacts": loaded[-1] if loaded else None, "artifacts_after_warm_up": saved[-1] if saved else None}


def start_once(repository: Path, cache: Path, label: str, size: int, log_dir: Path) -> dict:
    http_port, grpc_port, metrics_port = free_ports(3)
    log_path = log_dir / f"server_{label.replace(' ', '_')}.log"
    server = TritonServer(repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                          log_path=log_path)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache / "inductor")  # the volume, as the deployment sets it
    started = time.monotonic()
    try:
        server.start(timeout_s=1800)
        ready_s = time.monotonic() - started
        print(f"{label}: process start to ready {ready_s:.1f} s", flush=True)
        row = {"label": label, "ready_s": round(ready_s, 1), **artifacts_outcome(log_path.read_text()),
               "gpu_memory": gpu_memory(repository)}
        row.update(requests_through_both_apis(server, size))
        print(json.dumps(row), flush=True)
        return row
    except Exception:
        print(log_path.read_text()[-5000:] if log_path.exists() else "(no server log)", flush=True)
        raise
    finally:
        server.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--param", action="append", default=[], help="KEY=VALUE engine setting (pipeline model)")
    parser.add_argument("--max-batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024, help="width and height of the two requests")
    parser.add_argument("--card", default="")
    parser.add_argument("--cache-volume", type=Path, help="the cache volume to start on (default: a new empty one)")
    parser.add_argument("--starts", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.starts < 1:
        parser.error("--starts must be 1 or more")
    parameters = dict(item.split("=", 1) for item in args.param)

    with tempfile.TemporaryDirectory() as scratch:
        cache = args.cache_volume or Path(scratch) / "cache-volume"
        parameters["compile_cache_dir"] = str(cache / "compile-artifacts")

        def edit(config):
            config.max_batch_size = args.max_batch_size

        repository = write_repository(Path(scratch) / "model_repository", parameters, edit=edit)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        starts = []
        for number in range(1, args.starts + 1):
            label = "warm cache" if any((cache / "compile-artifacts").glob("*.bin")) else "empty cache"
            starts.append(start_once(repository, cache, f"{label} {number}", args.size, args.out.parent))
    import torch  # versions only, after the servers

    args.out.write_text(json.dumps({
        "card": args.card or "not stated", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "versions": {"torch": torch.__version__}, "max_batch_size": args.max_batch_size,
        "parameters": {k: v for k, v in parameters.items() if k != "compile_cache_dir"}, "size": args.size,
        "starts": starts,
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
