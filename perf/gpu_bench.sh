#!/usr/bin/env bash
# One benchmark on a GPU host without network access (see perf/NOTES.md). Carry .whl/ (diffusers, para-attn, torchao,
# importlib_metadata, zipp) with the call.
#   bash perf/gpu_bench.sh <bench_inprocess.py arguments...>   writes $OUT/$BENCH_NAME.json and .log
#   bash perf/gpu_bench.sh cold <cold_start.py arguments...>    writes $OUT/$BENCH_NAME.json and .log
# BENCH_NAME defaults to bench (cold); BENCH_TIMEOUT (s, default 570) bounds the run.
set -uo pipefail
source perf/gpu_setup.sh || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader
python3 -c "import torch, diffusers, para_attn, torchao; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'torchao', torchao.__version__)" || exit 1
script=perf/bench_inprocess.py name=${BENCH_NAME:-bench}
if [ "${1:-}" = cold ]; then
  shift
  script=perf/cold_start.py name=${BENCH_NAME:-cold}
fi
timeout -s INT -k 20 "${BENCH_TIMEOUT:-570}" python3 "$script" --out "$OUT/$name.json" "$@" 2>&1 | tee "$OUT/$name.log"
