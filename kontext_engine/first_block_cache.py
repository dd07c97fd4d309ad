"""para-attn's First Block Cache, adapted to the Flux block signatures of diffusers >= 0.35.

para-attn 0.3.38 (its latest release) walks Flux single blocks with the old signature
``block(hidden_states, temb, ...)`` on text+image tokens concatenated; since diffusers 0.35 a single
block takes ``(hidden_states, encoder_hidden_states, temb, ...)`` and returns both streams, so every
cache miss fails with ``missing 1 required positional argument: 'encoder_hidden_states'``.

We keep para-attn as the cache engine (its cache context, residual-difference decision and residual
buffers) and replace only the walk over the remaining blocks. We also avoid ``apply_cache_on_pipe``:
it patches the pipeline *class* and freezes its threshold at the first call. Instead the caller opens
a cache context per pipeline call (`cache_context`), which also counts computed and skipped steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import unittest.mock

import torch
from para_attn.first_block_cache import utils as fbc


@dataclasses.dataclass
class CountingCacheContext(fbc.CacheContext):
    """para-attn's cache context plus a count of steps that ran every block."""

    computed_steps: int = 0

    @property
    def skipped_steps(self) -> int:
        return self.executed_steps - self.computed_steps


class FluxCachedBlocks(fbc.CachedTransformerBlocks):
    """Runs the first double block, then either reuses the cached residual or runs the rest."""

    def call_remaining_transformer_blocks(self, hidden_states, encoder_hidden_states, *args, **kwargs):
        fbc.get_current_cache_context().computed_steps += 1
        original_hidden_states, original_encoder_hidden_states = hidden_states, encoder_hidden_states
        for block in self.transformer_blocks[1:]:
            encoder_hidden_states, hidden_states = block(hidden_states, encoder_hidden_states, *args, **kwargs)
        for block in self.single_transformer_blocks:
            encoder_hidden_states, hidden_states = block(hidden_states, encoder_hidden_states, *args, **kwargs)
        return (
            hidden_states,
            encoder_hidden_states,
            hidden_states - original_hidden_states,
            encoder_hidden_states - original_encoder_hidden_states,
        )


def apply_first_block_cache(transformer) -> None:
    """Routes the transformer's block loop through FluxCachedBlocks. Idempotent.

    Outside a `cache_context` the transformer must not be called (para-attn asserts a context).
    """
    if getattr(transformer, "_kontext_first_block_cache", False):
        return
    cached_blocks = torch.nn.ModuleList(
        [
            FluxCachedBlocks(
                transformer.transformer_blocks,
                transformer.single_transformer_blocks,
                transformer=transformer,
                return_hidden_states_first=False,  # Flux blocks return (encoder_hidden_states, hidden_states)
            )
        ]
    )
    no_blocks = torch.nn.ModuleList()
    original_forward = transformer.forward

    @functools.wraps(original_forward)
    def forward(*args, **kwargs):
        with unittest.mock.patch.object(transformer, "transformer_blocks", cached_blocks), unittest.mock.patch.object(
            transformer, "single_transformer_blocks", no_blocks
        ):
            return original_forward(*args, **kwargs)

    transformer.forward = forward
    transformer._kontext_first_block_cache = True


@contextlib.contextmanager
def cache_context(residual_diff_threshold: float):
    """One cache context for one pipeline call; yields it so the caller can read the step counts."""
    context = CountingCacheContext(residual_diff_threshold=residual_diff_threshold)
    with fbc.cache_context(context):
        yield context
