# GPU serving image: NGC Triton 24.10 (tritonserver 2.51.0, the version the tests run against,
# Python 3.10) plus this project. kontext-serve finds /opt/tritonserver and uses it.
# Not built in CI: the development and CI machines have no Docker engine.
#   docker build -t flux-kontext-triton .
#   docker run --gpus all -p 8000-8002:8000-8002 -v /models:/models -v kontext-cache:/cache \
#     -e KONTEXT_SETTING_MODEL_SOURCE=/models/FLUX.1-Kontext-dev flux-kontext-triton
FROM nvcr.io/nvidia/tritonserver:24.10-py3

WORKDIR /opt/kontext
COPY pyproject.toml README.md ./
COPY kontext_engine kontext_engine
COPY kontext_triton kontext_triton
COPY client client
COPY model_repository model_repository
# para-attn (the "cache" extra) goes through uv: pip refuses it (see pyproject.toml).
RUN python3 -m pip install --no-cache-dir ".[dev]" ./client \
 && uv pip install --system --no-deps "para-attn==0.3.38"

# Compile artifacts and the tiny model live here: mount a volume to keep cold starts fast.
# gpu-bf16: fused QKV, regional compile, compiled NHWC VAE, 1024x1024 edit warmed up (kontext_engine/profiles.py).
# KONTEXT_SETTING_PROFILE=gpu-fp8 adds 1.30x on an H100 (perf/NOTES.md, run F); its image quality on real
# weights is not measured yet, so it stays opt-in.
ENV KONTEXT_CACHE_DIR=/cache \
    KONTEXT_SETTING_PROFILE=gpu-bf16
# Not root: the server and the models run as this user, which owns the cache directory.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin kontext \
 && mkdir -p /cache && chown kontext /cache
USER 10001
# When tritonserver dies, exit non-zero (after reaping its stubs) and let the orchestrator restart the
# container, rather than restarting it inside.
ENV KONTEXT_ON_SERVER_EXIT=exit
# Clients need 8000 (HTTP) and 8001 (gRPC) for inference; 8002 (metrics) is for the scraper only.
# Model control (load/unload) needs the key in KONTEXT_ADMIN_KEY_FILE, e.g. a mounted Secret.
EXPOSE 8000 8001 8002
# In a container the server must listen on all interfaces; the pod network bounds who reaches it.
ENTRYPOINT ["kontext-serve", "--host", "0.0.0.0", "--model-repository", "/opt/kontext/model_repository", "--model", "flux_kontext"]
