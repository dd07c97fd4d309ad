#!/usr/bin/env bash
# Where does the FP8 + torch.compile first compile spend its time? (perf/NOTES.md, "Targets not met")
# Starts the fp8_regional variant at 512x512 in the background and dumps its Python stacks with py-spy.
set -uo pipefail
source perf/offline_gpu_host/setup.sh || exit 1
python -m kontext_bench.bench_inprocess --variants fp8_regional --shapes edit512 --steps 28 --runs 1 --out "$OUT/fp8.json" > "$OUT/fp8.log" 2>&1 &
pid=$!
for t in 45 75 100; do
  sleep $((t - ${last:-0})); last=$t
  echo "=== py-spy dump at ${t}s ===" >> "$OUT/stacks.txt"
  py-spy dump --pid $pid >> "$OUT/stacks.txt" 2>&1
  ps -eo pid,ppid,pcpu,etime,comm --sort=-pcpu | head -8 >> "$OUT/stacks.txt"
done
kill $pid; tail -5 "$OUT/fp8.log"; grep -c "" "$OUT/stacks.txt"
