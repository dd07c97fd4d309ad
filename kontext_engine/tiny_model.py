"""The embedded default: a tiny FluxKontextPipeline built offline from the real diffusers classes.

It is a smoke model. Its weights are seeded random numbers, so it produces noise-like images; it
exists so that the whole serving path (Triton, batching, codecs, client) runs anywhere in seconds
without downloading anything. The architecture is FLUX.1-Kontext's, shrunk: the same block types,
the same 16-channel VAE with 8x downsampling, the same CLIP + T5 text path. The tokenizers are
byte-level BPE models built locally with the `tokenizers` library.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

# Bump when the architecture or the build changes, so stale caches are never loaded.
TINY_MODEL_VERSION = "tiny-kontext-v1"
_SEED = 0
_HIDDEN = 32
_MAX_T5_TOKENS = 512


def byte_level_tokenizer(model_max_length: int, eos: str, pad: str, bos: str | None = None):
    """A tokenizer with one token per byte: needs no training data and covers any UTF-8 text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = [t for t in (pad, eos, bos) if t]
    vocab = {token: i for i, token in enumerate(specials + sorted(alphabet))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    if bos:
        template = f"{bos} $A {eos}"
        special_ids = [(bos, vocab[bos]), (eos, vocab[eos])]
    else:
        template = f"$A {eos}"
        special_ids = [(eos, vocab[eos])]
    tokenizer.post_processor = processors.TemplateProcessing(single=template, special_tokens=special_ids)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=model_max_length,
        pad_token=pad,
        eos_token=eos,
        bos_token=bos,
    )


def build_tiny_pipeline():
    """Builds the tiny pipeline in memory (float32, CPU), deterministically from a fixed seed."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(_SEED)
    clip_tokenizer = byte_level_tokenizer(77, eos="<|endoftext|>", pad="<|endoftext|>", bos="<|startoftext|>")
    t5_tokenizer = byte_level_tokenizer(_MAX_T5_TOKENS, eos="</s>", pad="<pad>")

    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tokenizer),
            hidden_size=_HIDDEN,
            intermediate_size=2 * _HIDDEN,
            projection_dim=_HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=clip_tokenizer.bos_token_id,
            eos_token_id=clip_tokenizer.eos_token_id,
            pad_token_id=clip_tokenizer.pad_token_id,
        )
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer),
            d_model=_HIDDEN,
            d_kv=8,
            d_ff=2 * _HIDDEN,
            num_layers=2,
            num_heads=4,
            feed_forward_proj="gated-gelu",
            pad_token_id=t5_tokenizer.pad_token_id,
            eos_token_id=t5_tokenizer.eos_token_id,
        )
    )
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels x 2x2 packing, as in FLUX
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=_HIDDEN,
        pooled_projection_dim=_HIDDEN,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),  # four levels: 8x downsampling, as in FLUX
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.1159,
        scaling_factor=0.3611,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, max_image_seq_len=4096, base_shift=0.5, max_shift=1.15, use_dynamic_shifting=True
    )
    return FluxKontextPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=clip,
        tokenizer=clip_tokenizer,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )


def ensure_tiny_model(cache_dir: Path) -> Path:
    """Writes the tiny pipeline to cache_dir once and returns its directory.

    Safe when several model instances start at once: each builds into a private temporary
    directory and renames it into place; a loser of the race discards its copy.
    """
    target = Path(cache_dir) / TINY_MODEL_VERSION
    if (target / "model_index.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{TINY_MODEL_VERSION}-", dir=target.parent))
    try:
        build_tiny_pipeline().save_pretrained(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "model_index.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
