"""First Block Cache for FLUX transformers: para-attn's decision rule, run by a block loop we own.

Installed once per transformer (`install_first_block_cache`): its double- and single-stream blocks
move into one `FluxCachedBlocks` module, which becomes the transformer's only "block", so diffusers'
own forward calls it once per step. No attribute is swapped per call.

- Outside a cache context the module runs every block in order: exactly the uninstalled model.
- Inside `cache_context(threshold)` (one per pipeline call, opened by the engine with the batch's
  threshold) it runs the first block, and para-attn decides from that block's residual: when
  mean|r_t - r_(t-1)| / mean|r_(t-1)| < threshold it adds the cached residual of the remaining blocks
  instead of running them. The context counts computed and skipped steps.

para-attn 0.3.38 (its latest release) walks Flux single blocks with the signature of diffusers < 0.35
(text and image tokens concatenated); since 0.35 a single block takes both streams and returns both,
so the walk over the remaining blocks is ours. Its cache context is a process-wide global: one
pipeline call at a time per process, which is how the engine runs.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from para_attn.first_block_cache import utils as fbc


@dataclasses.dataclass
class CountingCacheContext(fbc.CacheContext):
    """para-attn's cache context plus a count of steps that ran every block."""

    computed_steps: int = 0


class FluxCachedBlocks(fbc.CachedTransformerBlocks):
    """All of a FLUX transformer's blocks, run as one: every block, or the first plus a cached residual."""

    def __init__(self, transformer, parallel: bool = False):
        super().__init__(
            transformer.transformer_blocks,
            transformer.single_transformer_blocks,
            transformer=None,  # a submodule link back to the transformer would make the module tree a cycle
            return_hidden_states_first=False,  # FLUX blocks return (encoder_hidden_states, hidden_states)
        )
        # para-attn reads transformer._is_parallelized: when set, it averages the residual difference
        # over the default process group, so every rank of a context-parallel group (each holding one
        # piece of the sequence) takes the same decision.
        self.transformer = _ParallelFlag(parallel)

    def forward(self, hidden_states, encoder_hidden_states, *args, **kwargs):
        if fbc.get_current_cache_context() is None:  # exact: no cache for this call
            return self._run(self.transformer_blocks, hidden_states, encoder_hidden_states, *args, **kwargs)
        return super().forward(hidden_states, encoder_hidden_states, *args, **kwargs)

    def call_remaining_transformer_blocks(self, hidden_states, encoder_hidden_states, *args, **kwargs):
        _count_computed_step()
        encoder_out, hidden_out = self._run(self.transformer_blocks[1:], hidden_states, encoder_hidden_states,
                                            *args, **kwargs)
        return hidden_out, encoder_out, hidden_out - hidden_states, encoder_out - encoder_hidden_states

    def _run(self, double_blocks, hidden_states, encoder_hidden_states, *args, **kwargs):
        for block in (*double_blocks, *self.single_transformer_blocks):
            encoder_hidden_states, hidden_states = block(hidden_states, encoder_hidden_states, *args, **kwargs)
        return encoder_hidden_states, hidden_states


@torch.compiler.disable
def _count_computed_step() -> None:
    """Outside any compiled graph: traced, the count would be a guarded constant, and a whole-model
    compile would recompile at every step until Dynamo's limit, then run eager (452 ms per FP8 step
    instead of ~220 on an H100)."""
    fbc.get_current_cache_context().computed_steps += 1


@dataclasses.dataclass(frozen=True)
class _ParallelFlag:
    _is_parallelized: bool


def install_first_block_cache(transformer, parallel: bool = False) -> None:
    """Moves the transformer's blocks into one FluxCachedBlocks. Idempotent; call after loading weights
    (parameter names change: transformer_blocks.0.transformer_blocks.N...). parallel: the transformer
    runs on every rank of a context-parallel group."""
    if len(transformer.transformer_blocks) == 1 and isinstance(transformer.transformer_blocks[0], FluxCachedBlocks):
        return
    cached = FluxCachedBlocks(transformer, parallel)
    transformer.transformer_blocks = torch.nn.ModuleList([cached])
    transformer.single_transformer_blocks = torch.nn.ModuleList()


@contextlib.contextmanager
def cache_context(residual_diff_threshold: float):
    """One cache context for one pipeline call; yields it so the caller can read the step counts."""
    context = CountingCacheContext(residual_diff_threshold=residual_diff_threshold)
    with fbc.cache_context(context):
        yield context
