#!/bin/bash
# usage: run.sh PY MODE TAG -> cold then warm, each with its own fresh inductor cache dir.
# The warm dir gets only the cold run's compiled C++ kernel binaries (*.so/*.cpp), standing in for the
# Triton cubins a CUDA mega-cache bundles: no fxgraph/, aotautograd/ or dynamo/ entries, so anything
# else the warm process hits comes from the saved artifacts (mega-cache or .pt2 files).
PY=$1; MODE=$2; TAG=$3
cd "$(dirname "$0")"
rm -rf art/$MODE$([ "${MODEL:-tiny}" = flux ] && echo _flux) kern_${TAG}_${MODEL:-tiny}_$MODE
for PHASE in cold warm; do
  D=$(mktemp -d "$PWD/cache.XXXX")
  if [ $PHASE = warm ]; then cp -r kern_${TAG}_${MODEL:-tiny}_$MODE/. $D/; fi
  TORCHINDUCTOR_CACHE_DIR=$D $PY exp.py $MODE $PHASE > logs/${TAG}_${MODEL:-tiny}_${MODE}_${PHASE}.log 2>&1
  grep RESULT logs/${TAG}_${MODEL:-tiny}_${MODE}_${PHASE}.log | sed 's/^RESULT //' >> results_${TAG}.jsonl || echo "FAILED $MODE $PHASE"
  if [ $PHASE = cold ]; then
    mkdir -p kern_${TAG}_${MODEL:-tiny}_$MODE
    (cd $D && find . -mindepth 2 -maxdepth 2 \( -name '*.so' -o -name '*.cpp' \) -not -path './fxgraph/*' -not -path './aotautograd/*' -not -path './dynamo/*' | cpio -pdm ../kern_${TAG}_${MODEL:-tiny}_$MODE 2>/dev/null)
  fi
  rm -rf $D
done
# kernels kept for profiling
