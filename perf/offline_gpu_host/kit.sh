#!/usr/bin/env bash
# Packs what a GPU host without network access (Python 3.12, no network) needs to run tritonserver and perf_analyzer,
# taken from this checkout's .venv, into .gpu-kit/triton-kit.tar.xz (about 30 MB; the two wheels
# together are 69 MB). Unpacked by perf/offline_gpu_host/setup.sh.
#   pytriton/tritonserver/{bin,backends}, the Python 3.12 backend stub, nvidia_pytriton.libs (less the
#   unused libpython3.13), a stand-in pytriton/__init__.py (the real one imports pytriton's client
#   and its dependencies; the launcher only needs the package's location), the tritonclient Python
#   package and bin/perf_analyzer.
# Also downloads into .whl/, for CPython 3.12: python-rapidjson (tritonclient.grpc imports it) and
# numpy 1.26.4 (the machines have numpy 2, under which the 2.51 Python backend stub, built with a
# pybind11 that predates numpy 2, hands model.py BYTES inputs whose every byte is the first one).
set -euo pipefail
cd "$(dirname "$0")/../.."
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

mkdir -p "$stage/pytriton/tritonserver/python_backend_stubs" "$stage/bin"
cp -r "$site/pytriton/tritonserver/bin" "$site/pytriton/tritonserver/backends" "$stage/pytriton/tritonserver/"
cp -r "$site/pytriton/tritonserver/python_backend_stubs/3.12" "$stage/pytriton/tritonserver/python_backend_stubs/"
echo '"""tritonserver from the nvidia-pytriton 0.7.0 wheel, repacked by perf/offline_gpu_host/kit.sh."""' > "$stage/pytriton/__init__.py"
cp -r "$site/nvidia_pytriton.libs" "$stage/"
rm -f "$stage"/nvidia_pytriton.libs/libpython3-*
cp -r "$site/tritonclient" "$stage/"
cp .venv/bin/perf_analyzer "$stage/bin/"
find "$stage" -name __pycache__ -prune -exec rm -rf {} +

mkdir -p .gpu-kit .whl
tar -C "$stage" -cf - . | xz -T0 -6 > .gpu-kit/triton-kit.tar.xz
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl python-rapidjson==1.25 numpy==1.26.4
grep -qx '/.gpu-kit/' .git/info/exclude 2>/dev/null || echo '/.gpu-kit/' >> .git/info/exclude
ls -la .gpu-kit .whl
