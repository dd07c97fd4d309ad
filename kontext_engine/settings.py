"""Every engine setting, typed. Operators reach them through a profile and a few overrides
(profiles.py); the benchmark sets any field directly to measure it."""

from __future__ import annotations

from dataclasses import dataclass

from .loading import EMBEDDED_TINY


@dataclass(frozen=True)
class EngineSettings:
    model_source: str = EMBEDDED_TINY  # embedded-tiny, a local diffusers directory, or a hub id
    dtype: str = "auto"  # auto (bfloat16 on GPU, float32 on CPU), bfloat16, float16, float32
    # Optimizations (kontext_engine/optimizations.py; measured in perf/NOTES.md)
    cache_threshold: float = 0.0  # First Block Cache threshold for requests that send none; 0 = exact
    fuse_qkv: bool = False  # fused QKV projections in the transformer and the VAE
    fuse_qkv_double: bool = True  # with fuse_qkv, also the double-stream blocks' (text + image) attentions
    vae_channels_last: bool = False  # NHWC VAE (pays only together with compile_vae)
    compile: str = "none"  # none | regional (compile_repeated_blocks) | full
    compile_mode: str = "default"  # default | max-autotune-no-cudagraphs | max-autotune
    compile_vae: bool = False  # compile the VAE decoder
    static_shapes: bool = False  # one graph per warmed size and batch size: faster when several sizes are served; other sizes compile on first use
    inductor_recipe: bool = False  # the original recipe's inductor flags
    coordinate_descent: bool = False  # inductor tunes each Triton kernel's block sizes: ~3 ms faster per FP8 1024² step, but it tunes again at every start (perf/NOTES.md)
    multi_kernel: bool = False  # inductor also builds one-pass (persistent) variants of row reductions up to 16K wide and keeps the faster
    fp8: bool = False  # FP8 dynamic per-row quantization of the transformer blocks (GPU, sm89+, bfloat16)
    fp8_modulation: bool = True  # with fp8, also the blocks' AdaLN modulation Linears (one row per image)
    fp8_linear: str = "torchao"  # torchao (Float8Tensor weights) | scaled_mm (plain float8 buffers, kontext_engine/fp8_linear.py)
    attention_backend: str = ""  # a diffusers attention backend (e.g. _native_cudnn); empty = SDPA default
    compile_cache: bool = True  # persist torch.compile artifacts (mega-cache) for fast cold starts
    dynamo_cache: bool = False  # also keep Dynamo's traces with the artifacts (regional compile; with fp8, fp8_linear=scaled_mm)
    compile_cache_dir: str = ""  # where artifacts live; empty = $KONTEXT_CACHE_DIR/compile-artifacts
    warmup_shapes: str = ""  # run at start-up, e.g. "1024x1024:edit,512x512:text"; empty = none
    warmup_steps: int = 2  # steps per warm-up run (compiles every graph a request will need)
    context_parallel: int = 1  # devices one edit runs across (Ulysses); 1 = this process alone


def parse_value(raw: str, kind: type):
    """A config.pbtxt string as the field's type (bools: true/false, 1/0, yes/no, on/off)."""
    raw = raw.strip()
    if kind is bool:
        lowered = raw.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(raw)
        return lowered in ("true", "1", "yes", "on")
    return kind(raw)
