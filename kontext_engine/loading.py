"""Loads a FluxKontextPipeline from one of three sources.

- ``embedded-tiny`` (default): the tiny smoke model, built offline once into the cache directory.
  Nothing touches the network.
- a local directory in diffusers layout (e.g. a downloaded FLUX.1-Kontext-dev snapshot).
- a Hugging Face hub id (e.g. ``black-forest-labs/FLUX.1-Kontext-dev``), when the machine has
  network access and ``HF_TOKEN`` is set for gated models.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .tiny_model import ensure_tiny_model

EMBEDDED_TINY = "embedded-tiny"
RANDOM_FULL = "random-full"  # full-size architecture, random weights: for benchmarks only
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_cache_dir() -> Path:
    return Path(os.environ.get("KONTEXT_CACHE_DIR", Path.home() / ".cache" / "kontext-triton"))


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"dtype must be auto or one of {sorted(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


def describe_source(source: str) -> str:
    if source == EMBEDDED_TINY:
        return "embedded-tiny (random-weight smoke model: output is noise)"
    if source == RANDOM_FULL:
        return "random-full (full-size architecture, random weights: timings real, output is noise)"
    return source


def ensure_local_source(source: str, cache_dir: Path) -> None:
    """Builds the embedded tiny model now if it is the source (other sources exist already)."""
    if source == EMBEDDED_TINY:
        ensure_tiny_model(cache_dir)


def load_pipeline(source: str, device: torch.device, dtype: torch.dtype, cache_dir: Path | None = None):
    import diffusers
    import transformers
    from diffusers import FluxKontextPipeline

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()  # silences optional-dependency notices

    if source == RANDOM_FULL:
        from .random_model import build_random_pipeline

        pipeline = build_random_pipeline(device, dtype)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline
    if source == EMBEDDED_TINY:
        path, local_only = ensure_tiny_model(cache_dir or default_cache_dir()), True
    elif Path(source).is_dir():
        path, local_only = Path(source), True
    elif Path(source).is_absolute() or source.startswith("."):
        raise FileNotFoundError(f"model_source {source!r} is not a directory")
    else:
        path, local_only = source, False
    pipeline = FluxKontextPipeline.from_pretrained(
        path, dtype=dtype, local_files_only=local_only, token=os.environ.get("HF_TOKEN")
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)
