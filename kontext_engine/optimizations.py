"""The optimization stack, applied to a loaded pipeline in one fixed order.

Order matters: QKV fusion changes the Linear layers that FP8 then quantizes; the attention backend
and the First Block Cache (always installed; per request it runs exact or cached) change what the
transformer runs; compilation comes last so it traces the final modules. Every switch is an EngineSettings field (config.pbtxt parameter).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from . import dynamo_cache
from .context_parallel import attention_backend_for, enable_context_parallel
from .first_block_cache import install_first_block_cache
from .fp8_linear import swap_linears
from .loading import resolve_dtype
from .settings import EngineSettings

log = logging.getLogger(__name__)

STALE_STAGING_S = 600.0  # a save takes about a second; a staging file this old lost its writer (killed)

COMPILE_CHOICES = ("none", "regional", "full")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
FP8_LINEARS = ("torchao", "scaled_mm")
FP8_MIN_CAPABILITY = (8, 9)  # Ada and Hopper have FP8 tensor cores
# With static shapes every (size, batch size) is its own graph. Dynamo's default limit, 8 graphs per
# code object, shared by both block classes (one Module._call_impl), allows four: one size at batch
# sizes 1-4. Past the limit, fullgraph compilation fails the request.
STATIC_SHAPES_RECOMPILE_LIMIT = 64

# The original recipe's inductor flags; kept behind `inductor_recipe` so they can be measured.
INDUCTOR_RECIPE = {
    "conv_1x1_as_mm": True,
    "coordinate_descent_tuning": True,
    "coordinate_descent_check_all_directions": True,
    "epilogue_fusion": False,
    "shape_padding": True,
}


class UnsupportedOption(ValueError):
    """A setting that this device or installation cannot honour. Fails start-up with its name."""


def validate(settings: EngineSettings, device: torch.device) -> None:
    """Refuses impossible combinations before any work is done."""
    if settings.compile not in COMPILE_CHOICES:
        raise UnsupportedOption(f"compile must be one of {COMPILE_CHOICES}, got {settings.compile!r}")
    if settings.compile_mode not in COMPILE_MODES:
        raise UnsupportedOption(f"compile_mode must be one of {COMPILE_MODES}, got {settings.compile_mode!r}")
    if settings.context_parallel < 1:
        raise UnsupportedOption(f"context_parallel must be >= 1, got {settings.context_parallel}")
    if settings.cache_threshold < 0:
        raise UnsupportedOption(f"cache_threshold must be >= 0, got {settings.cache_threshold}")
    if settings.fp8_linear not in FP8_LINEARS:
        raise UnsupportedOption(f"fp8_linear must be one of {FP8_LINEARS}, got {settings.fp8_linear!r}")
    if settings.dynamo_cache:
        _validate_dynamo_cache(settings)
    if settings.fp8:
        if device.type != "cuda":
            raise UnsupportedOption(f"fp8 needs a CUDA GPU with compute capability >= 8.9; this instance runs on {device}")
        capability = torch.cuda.get_device_capability(device)
        if capability < FP8_MIN_CAPABILITY:
            raise UnsupportedOption(f"fp8 needs compute capability >= 8.9; {torch.cuda.get_device_name(device)} has {capability}")
        if resolve_dtype(settings.dtype, device) != torch.bfloat16:  # per-row scaled FP8 GEMMs output bf16
            raise UnsupportedOption(f"fp8 needs dtype bfloat16 (or auto); got {settings.dtype!r}")


def _validate_dynamo_cache(settings: EngineSettings) -> None:
    if settings.compile != "regional":
        raise UnsupportedOption("dynamo_cache keeps the regionally compiled blocks' traces with the compile "
                                "artifacts: it needs compile=regional")
    if settings.fp8 and settings.fp8_linear != "scaled_mm":
        raise UnsupportedOption("dynamo_cache with fp8 needs fp8_linear=scaled_mm: Dynamo cannot save its "
                                "guards on torchao's FP8 weights")
    if settings.context_parallel > 1:
        raise UnsupportedOption("dynamo_cache is for one device per instance (context_parallel=1)")


def apply_optimizations(pipeline, settings: EngineSettings, device: torch.device, parallel: bool = False) -> None:
    """Applies the stack in place. Call validate() first (KontextEngine.load does, before loading).
    parallel: this process is one rank of a context-parallel group (the default process group)."""
    transformer, vae = pipeline.transformer, pipeline.vae
    if settings.fuse_qkv:
        _fuse_qkv(transformer, settings.fuse_qkv_double)
        vae.fuse_qkv_projections()
    if settings.fp8:
        _quantize_fp8(transformer, settings.fp8_modulation, settings.fp8_linear)
    attention_backend = settings.attention_backend or (attention_backend_for(device) if parallel else "")
    if attention_backend:
        transformer.set_attention_backend(attention_backend)
    # Always installed: any request may ask for a cache threshold; at 0 it runs every block.
    install_first_block_cache(transformer, parallel)
    if parallel:
        enable_context_parallel(transformer, device)  # before compile: its hooks are part of what runs
    if settings.vae_channels_last:
        vae.to(memory_format=torch.channels_last)
    if settings.compile != "none" or settings.compile_vae:
        _compile(pipeline, settings)


# What diffusers keeps beside a fused attention's to_qkv / to_added_qkv, for unfusing.
SEPARATE_PROJECTIONS = {
    "to_qkv": ("to_q", "to_k", "to_v"),
    "to_added_qkv": ("add_q_proj", "add_k_proj", "add_v_proj"),
}


def _fuse_qkv(transformer, double_blocks: bool = True) -> None:
    """diffusers' QKV fusion, one attention at a time, dropping the separate projections it keeps for
    unfusing (which the engine never does). At full size they are 2.15 B parameters that nothing runs: 4.0
    GiB in bf16 while an FP8 instance loads (its peak: 36.27 against 32.26 GiB unfused on an H100,
    perf/results/raw/h100_runW3_bench.json), ~2 GiB once quantized. Only the attentions are listed, so each
    one's separate projections are freed before the next is fused (a list of all modules held every one
    of them to the end: 35.53 GiB, raw/h100_runX1_bench.json). double_blocks=False leaves the double-stream
    blocks' attentions (those with text projections too) apart."""
    from diffusers.models.attention import AttentionModuleMixin

    attentions = [m for m in transformer.modules() if isinstance(m, AttentionModuleMixin) and m._supports_qkv_fusion
                  and (double_blocks or getattr(m, "added_kv_proj_dim", None) is None)]
    for attention in attentions:
        attention.fuse_projections()
        for fused, separate in SEPARATE_PROJECTIONS.items():
            if hasattr(attention, fused):
                for name in separate:
                    delattr(attention, name)


def _quantize_fp8(transformer, modulation: bool, linear: str) -> None:
    """Dynamic per-row FP8 activations and weights for the transformer blocks' Linear layers; without
    `modulation`, the AdaLN modulation Linears stay in bf16 (their input is one row per image: a GEMV).
    `linear`: torchao's Float8Tensor weights, or plain float8 buffers (scaled_mm, fp8_linear.py)."""
    from diffusers.models.normalization import AdaLayerNormZero, AdaLayerNormZeroSingle

    kept = set() if modulation else {id(norm.linear) for norm in transformer.modules()
                                     if isinstance(norm, (AdaLayerNormZero, AdaLayerNormZeroSingle))}

    def in_blocks(module, fqn: str) -> bool:
        return isinstance(module, torch.nn.Linear) and "transformer_blocks" in fqn and id(module) not in kept

    if linear == "scaled_mm":
        swap_linears(transformer, in_blocks)
        return
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    # set_inductor_config=False: torchao otherwise switches on coordinate-descent tuning in all
    # directions for the whole process, and the first compile then benchmarks every kernel variant
    # for many minutes (perf/experiments/2026-11-26-fp8-compile-stall/h100_E_fp8_compile_stacks.txt). Inductor flags are ours to
    # set (`inductor_recipe`).
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False)
    quantize_(transformer, config, filter_fn=in_blocks)


def _compile(pipeline, settings: EngineSettings) -> None:
    if settings.inductor_recipe:
        for key, value in INDUCTOR_RECIPE.items():
            setattr(torch._inductor.config, key, value)
    if settings.coordinate_descent:
        # Tunes block sizes of the reductions and pointwise kernels (FP8 quantization, norms, modulation)
        # around inductor's heuristic pick, at each kernel's first run (whether a warm start reloads the
        # picks from the compile artifacts is not measured). Not in all directions: that stalled the first
        # FP8 compile for minutes.
        torch._inductor.config.coordinate_descent_tuning = True
    if settings.multi_kernel:
        # FP8's per-row activation quantization is a row reduction (amax) then a scale-and-cast. Rows wider
        # than 1024 (every one here: 3072-15360) get a looped kernel that reads the row twice; multi-kernel
        # also builds the one-pass variant and picks the faster at the first call. torch 2.11 cannot load a
        # multi-kernel graph from inductor's caches (perf/experiments/2026-11-27-multi-kernel): compile afresh.
        torch._inductor.config.triton.multi_kernel = 1
        torch._inductor.config.fx_graph_cache = False
        torch._functorch.config.enable_autograd_cache = False
    mode = None if settings.compile_mode == "default" else settings.compile_mode
    # dynamic=None: once a second size or batch size arrives, Dynamo recompiles with that dimension
    # symbolic, and a symbolic sequence length costs 45% per step at 512x512 on an H100 (perf/NOTES.md).
    dynamic = False if settings.static_shapes else None
    if settings.static_shapes:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, STATIC_SHAPES_RECOMPILE_LIMIT)
    transformer = pipeline.transformer
    if settings.dynamo_cache:
        dynamo_cache.enable()
    # Dynamo's cache installs its entries as torch.compile is called, with the dispatch keys of that
    # moment: under the inference_mode everything runs in, or no entry matches (dynamo_cache.py).
    with torch.inference_mode() if settings.dynamo_cache else contextlib.nullcontext():
        if settings.compile == "regional" and settings.dynamo_cache:
            dynamo_cache.compile_block_classes(transformer, mode=mode, dynamic=dynamic)
        elif settings.compile == "regional":
            # One compiled graph per block class, reused by all 57 blocks: ~10x faster to compile than
            # the whole model, same steady-state speed (see perf/NOTES.md).
            transformer.compile_repeated_blocks(fullgraph=True, mode=mode, dynamic=dynamic)
        elif settings.compile == "full":
            transformer.compile(mode=mode, dynamic=dynamic)
        if settings.compile_vae:
            pipeline.vae.decoder.compile(mode=mode, dynamic=dynamic)


def compile_cache_key(settings: EngineSettings, device: torch.device, model_config: dict) -> str:
    """Artifacts are valid only for the same torch, diffusers, torchao, GPU, model architecture and
    settings, model_source included: weights loaded from a directory compile to other graphs than the
    same architecture built in memory (measured: a start from a directory on random-full's artifacts
    compiled for 66 s, perf/NOTES.md). The device index is part of the key: inductor's cache entries
    name the device, so cuda:1 finds nothing in cuda:0's artifacts (on a 4-GPU host, instances on
    cuda:1-3 compiled as long as with no cache)."""
    import diffusers

    try:
        from torchao import __version__ as torchao_version  # FP8's kernels come from torchao
    except ImportError:
        torchao_version = None
    material = {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "torchao": torchao_version,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "device_index": torch.cuda.current_device() if device.type == "cuda" and device.index is None else device.index,
        "capability": torch.cuda.get_device_capability(device) if device.type == "cuda" else None,
        # The architecture: a saved model's config also records the diffusers version that wrote it ("_" keys).
        "model": {key: value for key, value in model_config.items() if not key.startswith("_")},
        "settings": _settings_material(settings),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _settings_material(settings: EngineSettings) -> dict:
    """Every setting but where the artifacts live; a directory source by its resolved path."""
    material = {key: value for key, value in settings.__dict__.items() if key != "compile_cache_dir"}
    if Path(settings.model_source).is_dir():
        material["model_source"] = str(Path(settings.model_source).resolve())
    return material


COMPILE_PHASES = {"compiling": "_compile.compile_inner", "Dynamo tracing": "bytecode_tracing",
                  "backend and cache loads": "OutputGraph.call_user_compiler", "guards": "build_guards"}


def compile_seconds() -> dict[str, float]:
    """Seconds torch.compile spent so far in this process, by phase (Dynamo's own accounting); a warm
    start's warm-up is mostly these."""
    try:  # a private API: a torch that changed it gets zeros, not a failed warm-up
        headers, values = torch._dynamo.utils.compile_times(repr="csv", aggregate=True)
        spent = dict(zip(headers, values))
        return {phase: float(spent.get(metric, 0.0)) for phase, metric in COMPILE_PHASES.items()}
    except Exception:
        return dict.fromkeys(COMPILE_PHASES, 0.0)


COMPILE_COUNTS = {"graphs traced": ("stats", "unique_graphs"),
                  "Dynamo cache entries loaded": ("dynamo_cache", "dynamo_cache_hit"),
                  "FX graph cache hits": ("inductor", "fxgraph_cache_hit"),
                  "FX graph cache misses": ("inductor", "fxgraph_cache_miss"),
                  "FX graph cache bypasses": ("inductor", "fxgraph_cache_bypass"),
                  "coordinate-descent benchmarks": ("inductor", "coordesc_tuning_bench")}


def compile_counts() -> dict[str, int]:
    """torch.compile's counts so far in this process: whether a warm start traced its graphs again or
    took them from the artifacts, and how many kernel configurations coordinate-descent tuning ran
    (tuning a start may repeat)."""
    try:  # a private API, as compile_seconds'
        counters = torch._dynamo.utils.counters
        return {name: int(counters[group][key]) for name, (group, key) in COMPILE_COUNTS.items()}
    except Exception:
        return dict.fromkeys(COMPILE_COUNTS, 0)


def load_compile_artifacts(path: Path) -> tuple[str, frozenset]:
    """Loads a saved mega-cache so warm-up reuses compiled kernels instead of compiling them. Returns
    "loaded", "absent" or "unreadable", and the keys of the artifacts loaded: a file torch cannot read
    (truncated, say) costs a cold compile and is replaced after warm-up, never a failed start."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "absent", frozenset()
    except OSError as error:
        log.warning("compile artifacts %s could not be read: %s", path, error)
        return "unreadable", frozenset()
    try:  # torch raises for more than truncation (with dynamo_cache, writing Dynamo's entries to disk)
        info = torch.compiler.load_cache_artifacts(data)
    except Exception as error:
        log.warning("compile artifacts %s could not be loaded: %s", path, error)
        return "unreadable", frozenset()
    return ("loaded", _artifact_keys(info)) if info is not None else ("unreadable", frozenset())


def save_compile_artifacts(path: Path, loaded: frozenset = frozenset(), retraced: bool = False) -> Optional[int]:
    """Saves what this process compiled or took from a cache; returns the number of bytes written (0 if
    nothing, or if torch or the directory cannot: a full or read-only volume costs the next start a
    compile, not this one), or None when all of it is among the artifacts `loaded` from the file:
    replicas sharing a volume do not rewrite the same ~80 MB at every start. `retraced`: Dynamo traced a
    function whose entry came from the file; the new entry keeps the old one's key, so save anyway."""
    try:  # with dynamo_cache torch pickles guards and writes Dynamo's entries here too
        saved = torch.compiler.save_cache_artifacts()
    except Exception as error:
        log.warning("compile artifacts not saved to %s: %s", path, error)
        return 0
    if saved is None:
        return 0
    data, info = saved
    used = _artifact_keys(info)
    if used and used <= loaded and not retraced:
        return None
    staging = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(path)
        # A staging file of its own: instances and replicas sharing the directory may save at the same time.
        descriptor, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            os.fchmod(file.fileno(), 0o644)  # as a plain write would leave it (mkstemp makes it 0600)
        os.replace(staging, path)
    except OSError as error:
        log.warning("compile artifacts not saved to %s: %s", path, error)
        return 0
    finally:
        if staging is not None and os.path.exists(staging):
            os.unlink(staging)
    return len(data)


def _artifact_keys(info) -> frozenset:
    """(kind, key) of every artifact a torch.compiler CacheInfo lists; empty if this torch lists them
    otherwise (then every start saves, as before)."""
    artifacts = getattr(info, "artifacts", None)
    if not isinstance(artifacts, dict):
        return frozenset()
    return frozenset((kind, key) for kind, keys in artifacts.items() for key in keys)


def _remove_stale_staging(path: Path) -> None:
    """Removes staging files of path whose writers were killed mid-save (~80 MB each on the volume)."""
    for staging in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if time.time() - staging.stat().st_mtime > STALE_STAGING_S:
                staging.unlink()
        except OSError:
            pass  # another writer finished or removed it meanwhile
