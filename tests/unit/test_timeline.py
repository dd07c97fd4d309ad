"""The timeline reader finds the GPU's idle gaps within steps and what the host did while the GPU waited after
a sync (kontext_bench/timeline.py)."""

import gzip
import json

from kontext_bench import timeline


def span(cat, name, ts, dur):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur}


def kernel(ts, dur, cat="kernel"):
    return span(cat, "k", ts, dur)


EVENTS = [
    span("user_annotation", "ProfilerStep#1", 0, 900),
    span("user_annotation", "ProfilerStep#2", 2000, 900),
    kernel(0, 10), kernel(12, 8),  # a 2 µs launch gap
    span("cpu_op", "aten::_local_scalar_dense", 15, 10),  # .item() returns at 25
    span("cpu_op", "TorchDynamo Cache Lookup", 100, 400),  # then the host: guards,
    span("cpu_op", "AOTDispatcher Runtime Wrapper Prologue", 600, 20),  # the compiled graph's prologue,
    span("cpu_op", "## Call CompiledFxGraph x ##", 900, 700),
    span("cuda_runtime", "cudaLaunchKernel", 1500, 5),  # and the first launch, 1475 µs after the value
    kernel(1525, 75), kernel(1600, 50, "gpu_memset"),  # the GPU waited 1505 µs
    kernel(1620, 10),  # inside the memset: no gap, no double-counted busy time
    kernel(2100, 100),  # across the step boundary (the profiler's sync at 2000): not idle within a step
    kernel(2250, 100),  # 50 µs gap
]


def test_gaps_within_steps_and_the_host_time_after_a_sync(tmp_path):
    path = tmp_path / "stack_1gpu_edit1024.json.gz"
    with gzip.open(path, "wt") as handle:
        json.dump({"traceEvents": EVENTS}, handle)
    row = timeline.summarize(timeline.load_events(path))
    assert row["steps"] == 2
    assert row["busy_ms"] == round((10 + 8 + 75 + 50 + 100 + 100) / 2000, 2)
    assert row["idle_ms"] == round((2 + 1505 + 50) / 2000, 2)
    assert {k: v["per_step"] for k, v in row["gaps"].items() if v["per_step"]} == {
        "0-5 us": 0.5, "20-100 us": 0.5, "1000-inf us": 0.5}
    assert row["syncs_per_step"] == 0.5 and row["idle_after_sync_ms"] == [1.505]
    assert (row["after_sync_host_ms"], row["after_sync_cache_lookup_ms"], row["after_sync_prologue_ms"]) == (
        1.475, 0.4, 0.3)
    assert "| stack_1gpu_edit1024 | 0.17 | 0.78 |" in timeline.table({"stack_1gpu_edit1024": row})[2]
