"""Operator profiles: a name that carries the measured best engine settings, plus a few overrides.

Operators set `profile` in config.pbtxt's parameters (or KONTEXT_SETTING_PROFILE) and may override
the keys in OVERRIDES; every other EngineSettings field belongs to the profile. Experiment switches
(compile mode, attention backend, inductor flags, static shapes) are set by the benchmark directly on
EngineSettings, never by operators. The README's profile table is `markdown_table()` (a test checks).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Mapping

from . import contract
from .settings import EngineSettings, parse_value

ENV_PREFIX = "KONTEXT_SETTING_"
PROFILE_KEY = "profile"
ADAPTER_KEYS = ("request_timeout_s",)  # read by the Triton adapter (kontext_triton/parameters.py), not here


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str
    settings: dict


_COMPILED = {"fuse_qkv": True, "compile": "regional", "compile_vae": True, "vae_channels_last": True,
             "warmup_shapes": "1024x1024:edit"}

PROFILES = {
    profile.name: profile
    for profile in (
        Profile("cpu-smoke", "the embedded tiny model on a CPU: nothing compiled, starts in seconds (tests, demos)", {}),
        Profile("gpu-bf16", "bfloat16 on a GPU: fused QKV, regional compile, compiled NHWC VAE, 1024x1024 edit "
                            "warmed up; 8.66 s per 1024² edit on an H100 (1.28× eager)", _COMPILED),
        Profile("gpu-fp8", "gpu-bf16 plus torchao FP8 (sm89+): 6.64 s per 1024² edit on an H100 (1.67× eager); "
                           "image quality on real weights not yet measured", {**_COMPILED, "fp8": True}),
        Profile("gpu-fp8-fast-start", "gpu-fp8 with FP8 weights as plain buffers and Dynamo's traces kept with the "
                                      "compile artifacts (torch's experimental caching_precompile): from a warm "
                                      "volume ready in 22-24 s instead of 32.5 s at max_batch_size 4 on an H100",
                {**_COMPILED, "fp8": True, "fp8_linear": "scaled_mm", "dynamo_cache": True}),
    )
}
DEFAULT_PROFILE = "cpu-smoke"

# What an operator may set besides the profile, and what it means.
OVERRIDES = {
    "model_source": "embedded-tiny, a local diffusers directory, a hub id, or random-full (benchmarks)",
    "compile_cache_dir": "where compile artifacts persist (a volume); empty = $KONTEXT_CACHE_DIR/compile-artifacts",
    "warmup_shapes": "shapes compiled and warmed before ready, e.g. 1024x1024:edit,512x512:text; empty = none",
    "cache_threshold": "First Block Cache threshold for requests that send none: 0 = exact (default), 0.08 balanced",
    "context_parallel": "devices one edit runs across (Ulysses); > 1 needs instance kind KIND_MODEL: instance i "
                        "owns GPUs N*i .. N*i+N-1. 1 = one device per instance (default)",
}


def settings_from_parameters(parameters: Mapping[str, str], environ: Mapping[str, str] = {}) -> EngineSettings:
    """config.pbtxt parameters (strings), overridden by KONTEXT_SETTING_<KEY> variables, to settings.

    Unknown keys and malformed values raise ValueError naming them.
    """
    overrides = {key[len(ENV_PREFIX):].lower(): value for key, value in environ.items()
                 if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX):].lower() not in ADAPTER_KEYS}
    parameters = {**parameters, **overrides}
    unknown = sorted(set(parameters) - {PROFILE_KEY, *OVERRIDES})
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; known: {[PROFILE_KEY, *OVERRIDES]}")
    name = parameters.pop(PROFILE_KEY, DEFAULT_PROFILE).strip()
    if name not in PROFILES:
        raise ValueError(f"profile {name!r} is not one of {sorted(PROFILES)}")
    types = {f.name: type(f.default) for f in fields(EngineSettings)}
    values = {}
    for key, raw in parameters.items():
        try:
            values[key] = parse_value(raw, types[key])
        except ValueError:
            raise ValueError(f"parameter {key!r}: cannot read {raw!r} as {types[key].__name__}") from None
    settings = replace(EngineSettings(**PROFILES[name].settings), **values)
    if not contract.MIN_CACHE_THRESHOLD <= settings.cache_threshold <= contract.MAX_CACHE_THRESHOLD:
        raise ValueError(f"parameter 'cache_threshold': must be in [{contract.MIN_CACHE_THRESHOLD}, "
                         f"{contract.MAX_CACHE_THRESHOLD}], got {settings.cache_threshold}")
    return settings


def markdown_table() -> str:
    """The README's table of profiles and overrides."""
    rows = ["| `profile` | what it is | settings |", "|---|---|---|"]
    for profile in PROFILES.values():
        settings = ", ".join(f"`{k}={v}`" for k, v in profile.settings.items()) or "all off"
        rows.append(f"| `{profile.name}` | {profile.summary} | {settings} |")
    rows += ["", "| override | meaning |", "|---|---|"]
    rows += [f"| `{key}` | {meaning} |" for key, meaning in OVERRIDES.items()]
    return "\n".join(rows)
