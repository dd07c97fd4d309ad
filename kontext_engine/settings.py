"""Operator settings: the typed table behind config.pbtxt's `parameters`.

Each field is one parameter key; its docstring line in the README's table comes from here.
Unknown keys and malformed values fail start-up with one clear message.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping

from .loading import EMBEDDED_TINY

ENV_PREFIX = "KONTEXT_SETTING_"


@dataclass(frozen=True)
class EngineSettings:
    model_source: str = EMBEDDED_TINY  # embedded-tiny, a local diffusers directory, or a hub id
    dtype: str = "auto"  # auto (bfloat16 on GPU, float32 on CPU), bfloat16, float16, float32
    # Optimizations (kontext_engine/optimizations.py; measured in perf/NOTES.md)
    cache_threshold: float = 0.0  # para-attn First Block Cache residual_diff_threshold; 0 = off
    fuse_qkv: bool = False  # fused QKV projections in the transformer and the VAE
    vae_channels_last: bool = False  # NHWC VAE (pays only together with compile_vae)
    compile: str = "none"  # none | regional (compile_repeated_blocks) | full
    compile_mode: str = "default"  # default | max-autotune-no-cudagraphs | max-autotune
    compile_vae: bool = False  # compile the VAE decoder
    static_shapes: bool = False  # one graph per warmed size and batch size: faster when several sizes are served; other sizes compile on first use
    inductor_recipe: bool = False  # the original recipe's inductor flags
    fp8: bool = False  # torchao FP8 dynamic per-row quantization of the transformer blocks (GPU, sm89+)
    attention_backend: str = ""  # a diffusers attention backend (e.g. _native_cudnn); empty = SDPA default
    compile_cache: bool = True  # persist torch.compile artifacts (mega-cache) for fast cold starts
    compile_cache_dir: str = ""  # where artifacts live; empty = $KONTEXT_CACHE_DIR/compile-artifacts
    warmup_shapes: str = ""  # run at start-up, e.g. "1024x1024:edit,512x512:text"; empty = none
    warmup_steps: int = 2  # steps per warm-up run (compiles every graph a request will need)

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str], environ: Mapping[str, str] = {}) -> "EngineSettings":
        """Builds settings from config.pbtxt parameters (all strings in Triton).

        An environment variable KONTEXT_SETTING_<KEY> (e.g. KONTEXT_SETTING_MODEL_SOURCE) overrides
        the parameter <key>: one image, configured per deployment (see deploy/kubernetes/).
        """
        known = {f.name: f for f in fields(cls)}
        overrides = {key[len(ENV_PREFIX):].lower(): value for key, value in environ.items() if key.startswith(ENV_PREFIX)}
        parameters = {**parameters, **overrides}
        unknown = sorted(set(parameters) - set(known))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; known: {sorted(known)}")
        values = {}
        for key, raw in parameters.items():
            kind = type(known[key].default)
            try:
                values[key] = _parse(raw, kind)
            except ValueError:
                raise ValueError(f"parameter {key!r}: cannot read {raw!r} as {kind.__name__}") from None
        return cls(**values)


def _parse(raw: str, kind: type):
    raw = raw.strip()
    if kind is bool:
        lowered = raw.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(raw)
        return lowered in ("true", "1", "yes", "on")
    return kind(raw)
