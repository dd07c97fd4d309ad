# Sourced by perf/offline_gpu_host/bench.sh and perf/offline_gpu_host/serve.sh on a GPU host without network access (Python 3.12, no network):
# installs the copied-in wheels (.whl/), the tritonserver + perf_analyzer kit when copied in (.gpu-kit/,
# built by perf/offline_gpu_host/kit.sh) and a .pth for this checkout into python3's own site-packages. Not
# PYTHONPATH: the Triton Python backend stub ignores the environment and imports from the
# site-packages of the first python3 on PATH. pip skips wheels already installed at their version.
site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl || return 1
# The copied-in numpy 1.26.4 is for the 2.51 backend stub (see perf/offline_gpu_host/kit.sh). Some of the image's
# packages are built for numpy 2 only, and transformers imports several optional ones (scipy, ...)
# whenever they are installed: move aside each package the pipeline imports fail in, until they load.
for attempt in 1 2 3 4 5 6 7 8; do
  err=$(python3 -c 'import diffusers.pipelines.flux.pipeline_flux_kontext
from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast, CLIPImageProcessor' 2>&1) && break
  culprit=$(printf '%s\n' "$err" | grep -o "$site/[A-Za-z0-9_]*" | grep -v -E "/(numpy|transformers|diffusers|torch|importlib_metadata)$" | tail -1)
  [ -n "$culprit" ] && [ -d "$culprit" ] || { printf '%s\n' "$err" | tail -15; return 1; }
  echo "gpu_setup: $(basename "$culprit") does not import under numpy 1.26; moved aside"
  mv "$culprit" "$culprit.needs-numpy2"
done
if [ -f .gpu-kit/triton-kit.tar.xz ] && [ ! -x "$site/bin/perf_analyzer" ]; then
  tar -C "$site" -xJf .gpu-kit/triton-kit.tar.xz || return 1
fi
printf '%s\n%s\n' "$PWD" "$PWD/client" > "$site/kontext-gpu-setup.pth"
export PATH="$site/bin:$PATH" PYTHONUNBUFFERED=1 OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
