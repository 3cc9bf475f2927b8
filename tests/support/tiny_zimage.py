"""Tiny, random-weight Z-Image pipeline built fully offline for tests.

`build_tiny_zimage(path)` writes a `save_pretrained()` folder that `ZImagePipeline.from_pretrained`
loads with HF_HUB_OFFLINE=1. Sizes follow diffusers' own Z-Image test components, except the VAE,
which keeps four blocks so the latent scale stays 8x like the real one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    ZImagePipeline,
    ZImageTransformer2DModel,
)
from transformers import Qwen3Config, Qwen3Model

from tests.support.qwen_tokenizer import make_qwen2_tokenizer, qwen_vocab
from tests.support.tiny_folders import save_atomically
from tests.support.tiny_models import make_tiny_vae

TEXT_HIDDEN_SIZE = 16
LATENT_CHANNELS = 16


def _make_transformer() -> ZImageTransformer2DModel:
    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=LATENT_CHANNELS,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        qk_norm=True,
        cap_feat_dim=TEXT_HIDDEN_SIZE,
        axes_dims=[8, 4, 4],
        # Caption positions, then latent rows and columns in patches: room for 2048-pixel sides.
        axes_lens=[1024, 256, 256],
    )
    with torch.no_grad():  # created with torch.empty; fix them so no run sees NaN
        transformer.x_pad_token.fill_(1.0)
        transformer.cap_pad_token.fill_(1.0)
    return transformer


def _make_text_encoder() -> Qwen3Model:
    vocab = qwen_vocab()
    torch.manual_seed(0)
    config = Qwen3Config(
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        vocab_size=len(vocab),
        max_position_embeddings=1024,
        pad_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|im_end|>"],
    )
    return Qwen3Model(config).eval()


def make_tiny_zimage_pipeline() -> ZImagePipeline:
    """Build the tiny pipeline in memory (deterministic: every component is seeded)."""
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=make_tiny_vae(
            LATENT_CHANNELS, scaling_factor=0.3611, shift_factor=0.1159, force_upcast=False
        ),
        text_encoder=_make_text_encoder(),
        tokenizer=make_qwen2_tokenizer(),
        transformer=_make_transformer(),
    )


def build_tiny_zimage(path: Path) -> Path:
    """Write the tiny Z-Image folder at `path` (no-op if already built); return `path`."""
    return save_atomically(make_tiny_zimage_pipeline, Path(path))
