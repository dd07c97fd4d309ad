#!/usr/bin/env bash
# One benchmark call on a lent GPU machine (see perf/NOTES.md). Needs the wheels in .whl/
# (diffusers, para-attn, torchao, importlib_metadata, zipp) carried with the call.
#   bash perf/gpu_bench.sh <bench_inprocess.py arguments...>   writes $OUT/bench.json and $OUT/bench.log
#   bash perf/gpu_bench.sh cold <cold_start.py arguments...>    writes $OUT/cold.json and $OUT/cold.log
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 OUT="${OUT:-/tmp/out}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader
python3 -c "import torch, diffusers, para_attn, torchao; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'torchao', torchao.__version__)" || exit 1
if [ "${1:-}" = cold ]; then
  shift
  timeout "${BENCH_TIMEOUT:-570}" python3 perf/cold_start.py --out "$OUT/cold.json" "$@" 2>&1 | tee "$OUT/cold.log"
else
  timeout "${BENCH_TIMEOUT:-570}" python3 perf/bench_inprocess.py --out "$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.log"
fi
