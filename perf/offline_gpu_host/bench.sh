#!/usr/bin/env bash
# One benchmark on a GPU host without network access (Python 3.12 and torch preinstalled; see perf/NOTES.md).
# Copy this checkout there with .whl/ (wheels of diffusers, para-attn, torchao, importlib_metadata, zipp; cache-dit
# for the peer variants).
#   bash perf/offline_gpu_host/bench.sh <kontext_bench.bench_inprocess arguments...>   writes $OUT/$BENCH_NAME.json and .log
#   bash perf/offline_gpu_host/bench.sh cold <kontext_bench.cold_start arguments...>    writes $OUT/$BENCH_NAME.json and .log
# BENCH_NAME defaults to bench (cold); BENCH_TIMEOUT (s, default 570) bounds the run.
set -uo pipefail
source perf/offline_gpu_host/setup.sh || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader
python3 -c "import torch, diffusers, para_attn, torchao; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'torchao', torchao.__version__)" || exit 1
module=kontext_bench.bench_inprocess name=${BENCH_NAME:-bench}
if [ "${1:-}" = cold ]; then
  shift
  module=kontext_bench.cold_start name=${BENCH_NAME:-cold}
fi
timeout -s INT -k 20 "${BENCH_TIMEOUT:-570}" python3 -m "$module" --out "$OUT/$name.json" "$@" 2>&1 | tee "$OUT/$name.log"
