"""Tiny, random-weight Qwen-Image pipeline built fully offline for tests.

`build_tiny_qwen_image(path)` writes a `save_pretrained()` folder that
`QwenImagePipeline.from_pretrained` loads with HF_HUB_OFFLINE=1. Sizes follow diffusers' own
Qwen-Image test components, except the VAE: Qwen-Image's own (causal 3D) VAE class scales by
2 ** len(temperal_downsample), so it keeps three downsamples for the real 8x scale.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
)
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from tests.support.qwen_tokenizer import make_qwen2_tokenizer, qwen_vocab
from tests.support.tiny_folders import save_atomically

TEXT_HIDDEN_SIZE = 16
LATENT_CHANNELS = 4


def _make_transformer() -> QwenImageTransformer2DModel:
    torch.manual_seed(0)
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=4 * LATENT_CHANNELS,  # 2x2 latent patches
        out_channels=LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=TEXT_HIDDEN_SIZE,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )


def _make_vae() -> AutoencoderKLQwenImage:
    torch.manual_seed(0)
    return AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],  # three spatial downsamples -> 8x
        latents_mean=[0.0] * LATENT_CHANNELS,
        latents_std=[1.0] * LATENT_CHANNELS,
    )


def tiny_text_encoder(
    vocab_size: int, eos: int, pad: int, **top: int | None
) -> Qwen2_5_VLForConditionalGeneration:
    """A two-layer Qwen2.5-VL (seeded) over `vocab_size` ids; `top`: its vision token ids and
    any top-level fields the pipeline reads."""
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": TEXT_HIDDEN_SIZE,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "vocab_size": vocab_size,
            "max_position_embeddings": 2048,
            "bos_token_id": None,
            "eos_token_id": eos,
            "pad_token_id": pad,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": TEXT_HIDDEN_SIZE,
        },
        hidden_size=TEXT_HIDDEN_SIZE,
        vocab_size=vocab_size,
        **top,
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _make_text_encoder() -> Qwen2_5_VLForConditionalGeneration:
    vocab = qwen_vocab()
    size = len(vocab)
    return tiny_text_encoder(
        size,
        vocab["<|im_end|>"],
        vocab["<|endoftext|>"],
        bos_token_id=None,
        eos_token_id=vocab["<|im_end|>"],
        # No image tokens in this vocabulary; ids past it are never looked up.
        vision_start_token_id=size,
        vision_end_token_id=size + 1,
        vision_token_id=size + 2,
        image_token_id=size + 3,
        video_token_id=size + 4,
    )


def make_tiny_qwen_image_pipeline() -> QwenImagePipeline:
    """Build the tiny pipeline in memory (deterministic: every component is seeded)."""
    return QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_make_vae(),
        text_encoder=_make_text_encoder(),
        tokenizer=make_qwen2_tokenizer(),
        transformer=_make_transformer(),
    )


def build_tiny_qwen_image(path: Path) -> Path:
    """Write the tiny Qwen-Image folder at `path` (no-op if already built); return `path`."""
    return save_atomically(make_tiny_qwen_image_pipeline, Path(path))
