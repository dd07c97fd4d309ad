"""Where a profiled step's GPU waits: reads the timelines `profile_step --trace-dir` writes.

Per trace (Chrome trace format, gzipped or not), per profiled step: GPU busy and idle time within the steps
(gaps that span a step boundary, where the profiler synchronises, are left out), idle gaps by size, and
every host synchronisation on a tensor's value (`aten::_local_scalar_dense`: `.item()`, `bool(tensor)`)
with the GPU idle it leaves, from the last GPU work before the value arrives to the first after. That idle
is host time, split where the trace marks it: Dynamo's cache lookups (guard evaluation) and a compiled
graph's runtime prologue (from AOTAutograd's wrapper to the compiled graph's call).

  python -m kontext_bench.timeline perf/results/h100_step_profile_vs_cache_dit/traces/*.json.gz
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import json
import statistics
from pathlib import Path

GPU_WORK = ("kernel", "gpu_memset", "gpu_memcpy")
HOST_API = ("cuda_runtime", "cuda_driver")
GAP_CLASSES_US = ((0, 5), (5, 20), (20, 100), (100, 1000), (1000, float("inf")))


def load_events(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return json.load(handle)["traceEvents"]


def named(events: list[dict], name: str) -> list[dict]:
    return sorted((e for e in events if e.get("name", "").startswith(name)), key=lambda e: e["ts"])


def summarize(events: list[dict]) -> dict:
    """Per-step figures (ms) of one trace; steps are the profiler's ProfilerStep ranges."""
    step_starts = [e["ts"] for e in named(events, "ProfilerStep") if e.get("cat") == "user_annotation"]
    steps = max(1, len(step_starts))
    work = sorted((e for e in events if e.get("cat") in GPU_WORK), key=lambda e: e["ts"])
    busy, gaps, end = 0.0, [], work[0]["ts"]
    for event in work:
        stop = event["ts"] + event["dur"]
        if event["ts"] > end and not any(end < t < event["ts"] for t in step_starts):
            gaps.append(event["ts"] - end)
        busy += max(0.0, stop - max(end, event["ts"]))
        end = max(end, stop)
    starts = [e["ts"] for e in work]
    launches = [e["ts"] for e in events if e.get("cat") in HOST_API and "aunch" in e["name"]]
    launches.sort()
    lookups, prologues, calls = (named(events, n) for n in (
        "TorchDynamo Cache Lookup", "AOTDispatcher Runtime Wrapper Prologue", "## Call CompiledFxGraph"))
    syncs, after_sync = named(events, "aten::_local_scalar_dense"), []
    for sync in syncs:
        returned = sync["ts"] + sync["dur"]
        i, j = bisect.bisect_left(starts, returned), bisect.bisect_left(launches, returned)
        if not (0 < i < len(work) and j < len(launches)):
            continue
        first_launch = launches[j]
        in_window = lambda spans: [e for e in spans if returned <= e["ts"] < first_launch]  # noqa: E731
        prologue = in_window(prologues)[-1:]
        graph_call = [c["ts"] for c in in_window(calls) if prologue and c["ts"] > prologue[0]["ts"]][:1]
        after_sync.append({
            "gpu_idle": work[i]["ts"] - max(e["ts"] + e["dur"] for e in work[:i]),
            "host": first_launch - returned,
            "cache_lookup": sum(e["dur"] for e in in_window(lookups)),
            "prologue": graph_call[0] - prologue[0]["ts"] if graph_call else 0.0,
        })
    per_step = 1e3 * steps  # µs totals -> ms per step

    def mean_ms(key: str) -> float | None:
        return round(statistics.fmean(s[key] for s in after_sync) / 1e3, 3) if after_sync else None

    return {
        "steps": steps,
        "busy_ms": round(busy / per_step, 2),
        "idle_ms": round(sum(gaps) / per_step, 2),
        "gaps": {f"{lo}-{hi} us": {"per_step": round(sum(1 for d in gaps if lo <= d < hi) / steps, 1),
                                   "ms": round(sum(d for d in gaps if lo <= d < hi) / per_step, 2)}
                 for lo, hi in GAP_CLASSES_US},
        "syncs_per_step": round(len(syncs) / steps, 1),
        "idle_after_sync_ms": [round(s["gpu_idle"] / 1e3, 3) for s in after_sync],
        "after_sync_host_ms": mean_ms("host"),
        "after_sync_cache_lookup_ms": mean_ms("cache_lookup"),
        "after_sync_prologue_ms": mean_ms("prologue"),
    }


def table(rows: dict[str, dict]) -> list[str]:
    lines = ["| trace | GPU busy ms/step | GPU idle ms/step | gaps 20-1000 µs per step (ms) | gaps ≥ 1 ms per step (ms) "
             "| value syncs per step | GPU idle after each sync, ms | host after a sync to the first launch: all "
             "(Dynamo cache lookup, compiled graph's prologue), ms |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        mid = [row["gaps"][k] for k in ("20-100 us", "100-1000 us")]
        long = row["gaps"]["1000-inf us"]
        after = ", ".join(f"{d:.2f}" for d in row["idle_after_sync_ms"]) or "-"
        host = (f"{row['after_sync_host_ms']:.2f} ({row['after_sync_cache_lookup_ms']:.2f}, "
                f"{row['after_sync_prologue_ms']:.2f})" if row["after_sync_host_ms"] is not None else "-")
        lines.append(f"| {name} | {row['busy_ms']} | {row['idle_ms']} | {sum(g['per_step'] for g in mid):.1f} "
                     f"({sum(g['ms'] for g in mid):.2f}) | {long['per_step']} ({long['ms']}) | {row['syncs_per_step']} "
                     f"| {after} | {host} |")
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
