# syntax=docker/dockerfile:1
# FLUX.1-Kontext on Triton Inference Server.
#
# Production base: NGC Triton 25.10 (tritonserver 2.62.0; Ubuntu 24.04, Python 3.12, CUDA 13.0). The
# tests run tritonserver 2.51.0 from the nvidia-pytriton wheel; 2.62 serves the same model repository,
# and its Python stub also handles numpy 2. torch 2.13.0 from PyPI is a CUDA 13 build: the host needs
# NVIDIA driver R580 or newer. The dependency set is deploy/image/requirements-gpu.lock (Python 3.12,
# manylinux x86_64, FP8 and First Block Cache included), installed with uv (pip refuses para-attn).
#   docker build -t flux-kontext-triton:0.1.0 .
#   docker run --gpus all --shm-size 2g -p 8000:8000 -p 8001:8001 -p 8002:8002 -v kontext-cache:/cache \
#     -v /models:/models:ro -e KONTEXT_SETTING_MODEL_SOURCE=/models/FLUX.1-Kontext-dev flux-kontext-triton:0.1.0
# The tests build it on a locally bootstrapped Debian with BASE, LOCK and FIND_LINKS set (CPU torch,
# the wheel's tritonserver): tests/deploy/test_image.py.
# Behind an HTTPS-intercepting proxy, pass its CA bundle as a build secret (never a layer):
#   docker build --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt .
ARG BASE=nvcr.io/nvidia/tritonserver:25.10-py3
# checkov:skip=CKV_DOCKER_7: the tag comes from BASE, pinned to 25.10 above (tests pass a local base)
FROM ${BASE}

ARG LOCK=deploy/image/requirements-gpu.lock
ARG FIND_LINKS=""
ARG UV_VERSION=0.13.9
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /opt/kontext

# Dependencies before code: a code change does not reinstall torch. A virtual environment, first on
# PATH: kontext-serve puts its interpreter's directory first for the backend stub, which then imports
# from it.
COPY ${LOCK} requirements.lock
RUN --mount=type=secret,id=ca_bundle,required=false \
    if [ -s /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle PIP_CERT=/run/secrets/ca_bundle; fi \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --no-cache-dir "uv==${UV_VERSION}" \
 && /opt/venv/bin/uv pip install --no-cache --python /opt/venv/bin/python --no-deps \
      ${FIND_LINKS:+--find-links "$FIND_LINKS"} -r requirements.lock
ENV PATH=/opt/venv/bin:$PATH

COPY pyproject.toml README.md ./
COPY kontext_engine kontext_engine
COPY kontext_triton kontext_triton
RUN --mount=type=secret,id=ca_bundle,required=false \
    if [ -s /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle; fi \
 && /opt/venv/bin/uv pip install --no-cache --python /opt/venv/bin/python --no-deps . \
 && groupadd --system --gid 10001 kontext \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin kontext \
 && mkdir -p /cache && chown kontext /cache

# The server and the models run as this user; the cache (compile artifacts, the tiny model) is its
# volume. Profile gpu-bf16 (kontext_engine/profiles.py); KONTEXT_SETTING_PROFILE=gpu-fp8 for FP8.
# When tritonserver dies, exit non-zero (after reaping its stubs) and let the orchestrator restart.
USER 10001
ENV KONTEXT_CACHE_DIR=/cache \
    KONTEXT_SETTING_PROFILE=gpu-bf16 \
    KONTEXT_ON_SERVER_EXIT=exit \
    HF_HUB_OFFLINE=1
# 8000 HTTP and 8001 gRPC inference for clients; 8002 metrics for the scraper only. Model control
# (load/unload) needs the key in KONTEXT_ADMIN_KEY_FILE, e.g. a mounted Secret.
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=30s --timeout=5s --start-period=900s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4)"]
# NVIDIA's entrypoint (when the base has one) stays; this is its command. The container listens on all
# interfaces: the pod network and the Service decide who reaches which port.
CMD ["kontext-serve", "--host", "0.0.0.0", "--model", "flux_kontext", "--model", "flux_kontext_stream"]
