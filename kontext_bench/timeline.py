"""Where a profiled step's GPU waits: reads the timelines `profile_step --trace-dir` writes.

Per trace (Chrome trace format, gzipped or not), per profiled step: GPU busy and idle time, idle gaps by
size, and every host synchronisation on a tensor's value (`aten::_local_scalar_dense`: `.item()`,
`bool(tensor)`), with the GPU idle it leaves: from the last GPU work before the value arrives to the
first after. That idle is host time: the Python after the sync, Dynamo's cache lookup and the compiled
region's prologue before its first kernel launches.

  python -m kontext_bench.timeline perf/results/h100_step_profile_vs_cache_dit/traces/*.json.gz
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import json
from pathlib import Path

GPU_WORK = ("kernel", "gpu_memset", "gpu_memcpy")
GAP_CLASSES_US = ((0, 5), (5, 20), (20, 100), (100, 1000), (1000, float("inf")))


def load_events(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return json.load(handle)["traceEvents"]


def summarize(events: list[dict]) -> dict:
    """Per-step figures (ms) of one trace; steps are the profiler's ProfilerStep ranges."""
    steps = max(1, sum(1 for e in events if e.get("cat") == "user_annotation" and e["name"].startswith("ProfilerStep")))
    work = sorted((e for e in events if e.get("cat") in GPU_WORK), key=lambda e: e["ts"])
    busy, gaps, end = 0.0, [], work[0]["ts"]
    for event in work:
        stop = event["ts"] + event["dur"]
        if event["ts"] > end:
            gaps.append((end, event["ts"] - end))
        busy += max(0.0, stop - max(end, event["ts"]))
        end = max(end, stop)
    starts = [e["ts"] for e in work]
    idle_after_sync = []
    for sync in (e for e in events if e.get("cat") == "cpu_op" and e["name"] == "aten::_local_scalar_dense"):
        returned = sync["ts"] + sync["dur"]
        i = bisect.bisect_left(starts, returned)
        if 0 < i < len(work):
            last_before = max(e["ts"] + e["dur"] for e in work[:i])
            idle_after_sync.append(max(0.0, work[i]["ts"] - last_before))
    per_step = 1e3 * steps  # µs totals -> ms per step
    return {
        "steps": steps,
        "busy_ms": round(busy / per_step, 2),
        "idle_ms": round(sum(d for _, d in gaps) / per_step, 2),
        "gaps": {f"{lo}-{hi} us": {"per_step": round(sum(1 for _, d in gaps if lo <= d < hi) / steps, 1),
                                   "ms": round(sum(d for _, d in gaps if lo <= d < hi) / per_step, 2)}
                 for lo, hi in GAP_CLASSES_US},
        "syncs_per_step": round(len(idle_after_sync) / steps, 1),
        "idle_after_sync_ms": [round(d / 1e3, 3) for d in idle_after_sync],
    }


def table(rows: dict[str, dict]) -> list[str]:
    lines = ["| trace | GPU busy ms/step | GPU idle ms/step | gaps 20-1000 µs per step (ms) | gaps ≥ 1 ms per step (ms) "
             "| value syncs per step | GPU idle after each sync, ms |",
             "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        mid = [row["gaps"][k] for k in ("20-100 us", "100-1000 us")]
        long = row["gaps"]["1000-inf us"]
        after = ", ".join(f"{d:.2f}" for d in row["idle_after_sync_ms"]) or "-"
        lines.append(f"| {name} | {row['busy_ms']} | {row['idle_ms']} | {sum(g['per_step'] for g in mid):.1f} "
                     f"({sum(g['ms'] for g in mid):.2f}) | {long['per_step']} ({long['ms']}) | {row['syncs_per_step']} "
                     f"| {after} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("traces", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    rows = {path.name.split(".")[0]: summarize(load_events(path)) for path in args.traces}
    print("\n".join(table(rows)))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
