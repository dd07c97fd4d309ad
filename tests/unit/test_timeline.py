"""The timeline reader finds the GPU's idle gaps and the idle each host sync leaves (kontext_bench/timeline.py)."""

import gzip
import json

from kontext_bench import timeline


def kernel(ts, dur, cat="kernel"):
    return {"ph": "X", "cat": cat, "name": "k", "ts": ts, "dur": dur}


EVENTS = [
    {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "ts": 0, "dur": 900},
    {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#2", "ts": 900, "dur": 900},
    kernel(0, 10), kernel(12, 8),  # a 2 µs launch gap
    {"ph": "X", "cat": "cpu_op", "name": "aten::_local_scalar_dense", "ts": 15, "dur": 10},  # .item() returns at 25
    kernel(1525, 75), kernel(1600, 50, "gpu_memset"),  # the GPU waited 1505 µs for the host
    kernel(1620, 10),  # inside the memset: no gap, no double-counted busy time
    kernel(1700, 100),  # 50 µs gap
]


def test_gaps_busy_time_and_the_idle_after_a_sync(tmp_path):
    path = tmp_path / "stack_edit1024.json.gz"
    with gzip.open(path, "wt") as handle:
        json.dump({"traceEvents": EVENTS}, handle)
    row = timeline.summarize(timeline.load_events(path))
    assert row["steps"] == 2
    assert row["busy_ms"] == round((10 + 8 + 75 + 50 + 100) / 2000, 2)
    assert row["idle_ms"] == round((2 + 1505 + 50) / 2000, 2)
    assert {k: v["per_step"] for k, v in row["gaps"].items() if v["per_step"]} == {
        "0-5 us": 0.5, "20-100 us": 0.5, "1000-inf us": 0.5}
    assert row["syncs_per_step"] == 0.5 and row["idle_after_sync_ms"] == [1.505]
    assert "| stack_edit1024 | 0.12 | 0.78 |" in timeline.table({"stack_edit1024": row})[2]
