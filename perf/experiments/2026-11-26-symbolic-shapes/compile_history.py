"""Does a request run slower once torch.compile has seen other shapes? The server's warm-up compiles
several (size, batch) combinations, and Dynamo recompiles with each changed dimension symbolic, so
a later request may run on a graph with a symbolic batch size or sequence length. This measures one
engine's per-step time for the same requests as the warm-up history grows, in the server's warm-up
order (results and reading: perf/NOTES.md, "torch.compile with several sizes"):

  stage 1: 1024x1024 at batch 1              (static graph, what kontext_bench/bench_inprocess.py measures)
  stage 2: + 1024x1024 at batch 4            (batch size symbolic)
  stage 3: + 512x512 at batch 1 and batch 4  (sequence length symbolic too)

--static-shapes sets the engine's static_shapes: every combination gets its own graph. (Run H's
static figures came from the same idea set globally: torch._dynamo.config.automatic_dynamic_shapes =
False; run I's from this setting.)

  python perf/experiments/2026-11-26-symbolic-shapes/compile_history.py --variant stack --steps 28 [--static-shapes] --out history.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from kontext_engine import KontextEngine
from kontext_engine.settings import EngineSettings
from kontext_bench.bench_inprocess import VARIANTS, StepClock, environment, log, make_request, sync

STAGES = [  # (what to warm up, what to measure afterwards); shapes are (size, batch)
    ([(1024, 1)], [(1024, 1)]),
    ([(1024, 4)], [(1024, 1), (1024, 4)]),
    ([(512, 1), (512, 4)], [(1024, 1), (512, 1), (512, 4)]),
]


def run(engine, size: int, batch: int, steps: int, clock=None) -> float:
    sync(engine.device)
    started = time.perf_counter()
    results = engine.run([make_request(size, size, True, steps)] * batch, on_step=clock)
    sync(engine.device)
    for result in results:
        if isinstance(result, Exception):
            raise result
    return time.perf_counter() - started


def graph_count() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="random-full")
    parser.add_argument("--variant", default="stack", choices=sorted(VARIANTS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--static-shapes", action="store_true")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = torch.device(args.device)
    settings = replace(EngineSettings(model_source=args.source, compile_cache=False), **VARIANTS[args.variant],
                       static_shapes=args.static_shapes)
    engine = KontextEngine.load(settings, device, max_batch_size=max(batch for _, ms in STAGES for _, batch in ms))
    report = {**environment(device), "command": " ".join(sys.argv), "variant": args.variant,
              "static_shapes": args.static_shapes, "torch_threads": torch.get_num_threads(), "stages": []}
    for stage, (warm, measure) in enumerate(STAGES, 1):
        started = time.perf_counter()
        for size, batch in warm:
            run(engine, size, batch, steps=2)
        entry = {"stage": stage, "warmed": warm, "warm_s": round(time.perf_counter() - started, 1),
                 "graphs": graph_count(), "runs": []}
        for size, batch in measure:
            clock = StepClock(device)
            seconds = run(engine, size, batch, args.steps, clock)
            full, _cached = clock.step_ms()
            step_ms = statistics.median(full)
            entry["runs"].append({"size": size, "batch": batch, "e2e_s": round(seconds, 3),
                                  "step_ms": round(step_ms, 2), "step_ms_per_image": round(step_ms / batch, 2)})
            log(f"stage {stage} {size}x{size} batch {batch}: {seconds:.3f} s, {step_ms:.1f} ms/step "
                f"({step_ms / batch:.1f} per image), graphs so far {graph_count()}")
        report["stages"].append(entry)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
