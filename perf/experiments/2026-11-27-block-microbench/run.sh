# On a GPU host without network access, from the repository root with .whl/ copied in (perf/NOTES.md, "How to reproduce").
# Run Z0: the double block's Q/K norms with fused against separate QKV (inductor's output code), and coordinate
# descent on the single block: cold, then a fresh process from the artifacts only, then from the local caches only.
# Run Z1: fused against separate QKV, both layouts compiled in one process and timed alternately (ab.py).
set -x
source perf/offline_gpu_host/setup.sh
HERE=perf/experiments/2026-11-27-block-microbench
nvidia-smi -L > $OUT/gpus.txt
R=$OUT/blocks.jsonl
for f in 1 0; do
  TORCHINDUCTOR_CACHE_DIR=/tmp/ind_q$f TRITON_CACHE_DIR=/tmp/tri_q$f TORCH_LOGS=output_code \
    python3 $HERE/blocks.py --kind double --fused $f --fp8 torchao --out $R --tag qk_fused$f 2> $OUT/output_code_double_fused$f.log
done
python3 $HERE/blocks.py --kind single --fused 1 --fp8 torchao --out $R --tag single_plain > /dev/null 2>&1
DESC_LOG=1 TORCHINDUCTOR_CACHE_DIR=/tmp/ind_d1 TRITON_CACHE_DIR=/tmp/tri_d1 python3 $HERE/blocks.py --kind single --fused 1 \
  --fp8 torchao --descent 1 --save /tmp/d.bin --out $R --tag descent_cold 2> $OUT/descent_cold.log
DESC_LOG=1 TORCHINDUCTOR_CACHE_DIR=/tmp/ind_d2 TRITON_CACHE_DIR=/tmp/tri_d2 python3 $HERE/blocks.py --kind single --fused 1 \
  --fp8 torchao --descent 1 --load /tmp/d.bin --out $R --tag descent_from_artifacts 2> $OUT/descent_from_artifacts.log
DESC_LOG=1 TORCHINDUCTOR_CACHE_DIR=/tmp/ind_d1 TRITON_CACHE_DIR=/tmp/tri_d1 python3 $HERE/blocks.py --kind single --fused 1 \
  --fp8 torchao --descent 1 --out $R --tag descent_local_caches 2> $OUT/descent_local_caches.log
for kind in double single; do python3 $HERE/ab.py $kind $OUT/blocks_ab.jsonl; done
