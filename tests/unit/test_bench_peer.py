"""The cache-dit peer is measured through the benchmark like a variant of ours: the same clocks, inputs and
baseline, with the steps its cache skipped counted and timed apart, and the process left as it was."""

import argparse
import math

import pytest
import torch

from kontext_bench import bench_inprocess

STEPS = 12  # DBCache computes its first 8 steps ("warm-up"), so a cache that always hits skips the last 4


@pytest.fixture(scope="module")
def measured():
    from diffusers import FluxKontextPipeline

    original_call = FluxKontextPipeline.__call__
    args = argparse.Namespace(source="embedded-tiny", dtype="auto", shapes=["edit256"], steps=[STEPS], runs=1)
    device, references = torch.device("cpu"), {}
    run = lambda name, delta: bench_inprocess.run_variant(name, delta, args, device, {}, references)[0]  # noqa: E731
    rows = {
        "baseline": run("baseline", {}),
        "exact": run("cache_dit_bf16", {"cache_threshold": 0.0, "compile": "none"}),
        "always_hit": run("cache_dit_bf16", {"cache_threshold": 1000.0, "compile": "none"}),
    }
    rows["call_restored"] = FluxKontextPipeline.__call__ is original_call
    return rows


def test_the_peer_without_its_cache_renders_the_baseline(measured):
    exact = measured["exact"]
    assert exact["steps_computed"] == [STEPS] and exact["cached_step_ms"] is None
    assert exact["psnr_db"] == math.inf  # the same pipeline call as the engine's: the same image


def test_steps_the_peer_skipped_are_counted_and_timed_apart(measured):
    cached = measured["always_hit"]
    assert cached["steps_computed"] == [8]
    assert cached["cached_step_ms"] is not None and cached["full_step_ms"] is not None
    assert cached["psnr_db"] < measured["exact"]["psnr_db"]  # skipping steps has a price, and the row shows it


def test_the_peer_leaves_the_pipeline_class_as_it_found_it(measured):
    # cache-dit wraps FluxKontextPipeline.__call__ process-wide; unreleased, later variants would run through it
    assert measured["call_restored"]


def test_steps_reported_as_cached_after_the_call_are_timed_apart():
    clock = bench_inprocess.StepClock(torch.device("cpu"))
    clock.events = [0.0, 0.100, 0.110, 0.210, 0.220]  # seconds at the end of steps 0..4 (0-based)
    clock.reclassify(cached_steps=[2, 4])
    full, cached = clock.step_ms()  # from step 1 on: steps 1 and 3 computed, 2 and 4 cached
    assert [round(ms) for ms in full] == [100, 100] and [round(ms) for ms in cached] == [10, 10]
