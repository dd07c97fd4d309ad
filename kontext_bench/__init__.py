"""Benchmark tooling: in-process benchmark, perf_analyzer sweeps, reports."""
