#!/usr/bin/env bash
# On a GPU host without network access, from the checkout root, with .whl/ (diffusers, torchao,
# para-attn, cache-dit, importlib_metadata) and, for the A/B, .old/ (kontext_engine and the benchmark of
# the commit before the block loop moved into the engine: git archive 2f2edf9 kontext_engine perf/*.py).
#   bash perf/experiments/2026-11-26-first-block-cache/gpu_run.sh
# 1. FP8 stack at a 1024x1024 edit, 28 steps: this code, then the previous code, same card, same process order.
# 2. First Block Cache implementations side by side (eager, 1024x1024 edit, 10 steps).
set -uo pipefail
source perf/offline_gpu_host/setup.sh || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/cache_dit-*.whl || exit 1
nvidia-smi --query-gpu=name,uuid,memory.total,driver_version,power.limit --format=csv,noheader | tee "$OUT/card.txt"
bench="--source random-full --variants stack --shapes edit1024 --steps 28 --runs 3"
timeout -s INT -k 20 240 python3 -m kontext_bench.bench_inprocess $bench --out "$OUT/stack_new.json" 2>&1 | tail -4 | tee "$OUT/stack_new.log"
if [ -d .old ]; then
  (cd .old && timeout -s INT -k 20 200 python3 perf/bench_inprocess.py $bench --out "$OUT/stack_old.json" 2>&1 | tail -4 | tee "$OUT/stack_old.log")
fi
timeout -s INT -k 20 150 python3 -m kontext_bench.cache_compare --source random-full --width 1024 --height 1024 \
  --steps 10 --out "$OUT/cache_compare.json" 2>&1 | grep -v Warning | tail -12 | tee "$OUT/cache_compare.log"
