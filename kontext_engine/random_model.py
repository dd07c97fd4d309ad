"""The full-size FLUX.1-Kontext architecture with seeded random weights, built in memory on a device.

For benchmarks where real weights cannot be downloaded: every layer has FLUX.1-Kontext-dev's shape
(transformer 19 double + 38 single blocks, 24 heads x 128, 11.9 B parameters; 16-channel VAE;
T5-XXL and CLIP-L sized text encoders), so timing, memory and FLOPs are real. Images are noise,
and First Block Cache hit rates and fidelity figures do not transfer to real weights.
"""

from __future__ import annotations

import contextlib

import torch

from .tiny_model import byte_level_tokenizer

TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=16,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=0.3611,
    shift_factor=0.1159,
    use_quant_conv=False,
    use_post_quant_conv=False,
)
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              feed_forward_proj="gated-gelu")
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, projection_dim=768, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")


@contextlib.contextmanager
def _creating(device: torch.device, dtype: torch.dtype):
    """Parameters are created directly on the device in the target dtype (no float32 copy)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_random_pipeline(device: torch.device, dtype: torch.dtype, seed: int = 0):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tokenizer = byte_level_tokenizer(77, eos="<|endoftext|>", pad="<|endoftext|>", bos="<|startoftext|>")
    t5_tokenizer = byte_level_tokenizer(512, eos="</s>", pad="<pad>")
    torch.manual_seed(seed)
    with _creating(device, dtype):
        transformer = FluxTransformer2DModel(**TRANSFORMER)
        vae = AutoencoderKL(**VAE)
        t5 = T5EncoderModel(T5Config(**T5_XXL, pad_token_id=t5_tokenizer.pad_token_id,
                                     eos_token_id=t5_tokenizer.eos_token_id))
        clip = CLIPTextModel(CLIPTextConfig(**CLIP_L, bos_token_id=clip_tokenizer.bos_token_id,
                                            eos_token_id=clip_tokenizer.eos_token_id,
                                            pad_token_id=clip_tokenizer.pad_token_id))
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, max_image_seq_len=4096, base_shift=0.5, max_shift=1.15, use_dynamic_shifting=True
    )
    pipeline = FluxKontextPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=clip_tokenizer,
                                   text_encoder_2=t5, tokenizer_2=t5_tokenizer, transformer=transformer)
    return pipeline  # already on the device, in dtype
