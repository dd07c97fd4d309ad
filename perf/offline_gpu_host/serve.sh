#!/usr/bin/env bash
# tritonserver + the model + perf_analyzer on a GPU host without network access (see perf/NOTES.md). Copy this
# checkout there with .whl/ and .gpu-kit/ (bash perf/offline_gpu_host/kit.sh).
#   bash perf/offline_gpu_host/serve.sh <kontext_bench.serve_and_sweep arguments...>
# Appends to $OUT/serve.log and packs every result file it wrote into $OUT/<name>.tar.gz.
# SERVE_TIMEOUT (s, default 570) bounds the run; SIGINT lets serve_and_sweep stop the server first.
set -uo pipefail
source perf/offline_gpu_host/setup.sh || exit 1
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
name=$(python3 -c 'import sys; a = sys.argv[1:]; print(a[a.index("--name") + 1])' "$@")
stamp=$(mktemp)
timeout -s INT -k 30 "${SERVE_TIMEOUT:-570}" python3 -m kontext_bench.serve_and_sweep --card "$card" "$@" 2>&1 | tee -a "$OUT/serve.log"
rc=${PIPESTATUS[0]}
find perf/results -newer "$stamp" -type f -print0 | tar --null -T - -czf "$OUT/$name.tar.gz"
exit "$rc"
