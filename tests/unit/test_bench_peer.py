"""The cache-dit peer is measured through the benchmark like a variant of ours: the same clocks, inputs and
baseline, with the steps its cache skipped counted and timed apart."""

import argparse
import math

import pytest
import torch

from kontext_bench import bench_inprocess

STEPS = 12  # DBCache computes its first 8 steps ("warm-up"), so a cache that always hits skips the last 4


@pytest.fixture(scope="module")
def measured():
    args = argparse.Namespace(source="embedded-tiny", dtype="auto", shapes=["edit256"], steps=[STEPS], runs=1)
    device, references = torch.device("cpu"), {}
    run = lambda name, delta: bench_inprocess.run_variant(name, delta, args, device, {}, references)[0]  # noqa: E731
    return {
        "baseline": run("baseline", {}),
        "exact": run("cache_dit_bf16", {"cache_threshold": 0.0, "compile": "none"}),
        "always_hit": run("cache_dit_bf16", {"cache_threshold": 1000.0, "compile": "none"}),
    }


def test_the_peer_without_its_cache_renders_the_baseline(measured):
    exact = measured["exact"]
    assert exact["steps_computed"] == [STEPS] and exact["cached_step_ms"] is None
    assert exact["psnr_db"] == math.inf  # the same pipeline call as the engine's: the same image


def test_steps_the_peer_skipped_are_counted_and_timed_apart(measured):
    cached = measured["always_hit"]
    assert cached["steps_computed"] == [8]
    assert cached["cached_step_ms"] is not None and cached["full_step_ms"] is not None
    assert cached["psnr_db"] < measured["exact"]["psnr_db"]  # skipping steps has a price, and the row shows it
