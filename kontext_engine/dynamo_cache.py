"""Dynamo's traces kept with the compile artifacts, so a warm start does not trace the blocks again.

With torch's `caching_precompile` (experimental in torch 2.11), every compiled function's bytecode and
guards go into the same mega-cache the engine saves and loads (optimizations.py); a process that loaded
the artifacts before compiling installs them instead of tracing. Found on the way
(perf/experiments/2026-11-27-dynamo-precompile/findings.md):
- Entries are keyed by function name and first line. nn.Module.compile (diffusers' compile_repeated_blocks)
  wraps Module._call_impl for both block classes, so their entries overwrite each other: here each class's
  forward is compiled once and bound to every instance.
- Loaded tensor guards take the dispatch keys of the moment torch.compile is called: compiled outside the
  inference_mode the model runs in, every loaded entry misses (the VAE decoder's did, on an H100).
- Weights must be plain tensors: Dynamo cannot save guards on torchao's Float8Tensor (fp8_linear=scaled_mm).
- Dynamo's entries are written to inductor's local cache (<TORCHINDUCTOR_CACHE_DIR>/dynamo) under the
  function's key, not the artifact file's: a start whose file lacks an entry may install one another setting
  left there. It runs only if its guards hold (parameters' dtypes, shapes and strides; the source of every
  inlined function; torch, Triton and GPU), else Dynamo traces afresh: then it is a trace of the same
  source for the same tensors, at worst compiled under other inductor options (benchmark switches).
- Two torch bugs need working around (below).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import types

import torch


def enable() -> None:
    """Turns the cache on for this process (once); before the first torch.compile."""
    guards_log = logging.getLogger("torch._dynamo.guards")
    if _not_a_dropped_guard in guards_log.filters:
        return
    torch._dynamo.config.caching_precompile = True
    # By design the cache leaves out guards on object identity; torch warns of each one it drops, ~900
    # lines per start for these blocks.
    guards_log.addFilter(_not_a_dropped_guard)
    _pickle_init_fields_only()
    _unique_names_per_process()


def _not_a_dropped_guard(record: logging.LogRecord) -> bool:
    return "is dropped with caching_precompile" not in record.getMessage()


def compile_block_classes(transformer, **compile_kwargs) -> None:
    """What compile_repeated_blocks compiles (the classes in transformer._repeated_blocks), as one
    compiled forward per class bound to each of its instances. Call under inference_mode."""
    classes = {type(module) for module in transformer.modules()
               if type(module).__name__ in (getattr(transformer, "_repeated_blocks", None) or ())}
    if not classes:
        raise ValueError(f"{type(transformer).__name__} names no repeated block classes to compile")
    for cls in classes:
        compiled = torch.compile(cls.forward, fullgraph=True, **compile_kwargs)
        for module in transformer.modules():
            if type(module) is cls:
                module.forward = types.MethodType(compiled, module)


def _pickle_init_fields_only() -> None:
    """torch 2.11 (fixed by 2.13): a guard source's __reduce__ also pickles the dataclass fields that are
    not constructor arguments, so a guard on a function's defaults (Flux blocks have them) does not load:
    "DefaultsSource.__init__() takes from 3 to 4 positional arguments but 6 were given". Needed in the
    process that saves."""
    import torch._dynamo.source as sources
    import torch._guards as guards

    for module in (sources, guards):
        for value in vars(module).values():
            if (isinstance(value, type) and dataclasses.is_dataclass(value) and "__reduce__" in vars(value)
                    and any(not field.init for field in dataclasses.fields(value))):
                value.__reduce__ = _reduce_by_constructor


def _reduce_by_constructor(source):
    return type(source), tuple(getattr(source, f.name) for f in dataclasses.fields(source) if f.init)


def _unique_names_per_process() -> None:
    """torch 2.11 and 2.13: the globals Dynamo installs are named from a counter that starts at 0 in
    every process, so the first trace after a load (a shape not in the artifacts) takes a name a loaded
    entry holds and fails (AssertionError in CleanupHook.create). Each process starts it elsewhere."""
    import torch._dynamo.bytecode_transformation as bytecode

    bytecode._unique_id_counter = itertools.count(random.SystemRandom().randrange(10**9, 10**12))
