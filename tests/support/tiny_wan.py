"""A tiny, random-weight Wan 2.2 TI2V-style pipeline built fully offline for tests.

`build_tiny_wan(path)` writes a `save_pretrained()` folder that `WanPipeline.from_pretrained`
loads with HF_HUB_OFFLINE=1, shaped as `Wan-AI/Wan2.2-TI2V-5B-Diffusers` is: one transformer,
no image encoder, `expand_timesteps` (the first frame is conditioned in latent space), a VAE with
48 latent channels and a spatial scale of 16 (sides are multiples of 32 with the patch of 2).
Sizes follow diffusers' own Wan 2.2 TI2V test components; the tokenizer is a unigram T5
tokenizer made from an in-memory vocabulary.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

from tests.support.tiny_folders import save_atomically

TEXT_DIM = 32
LATENT_CHANNELS = 48


def make_t5_tokenizer() -> T5Tokenizer:
    """Single characters, with and without the word-start mark: any ASCII prompt tokenizes."""
    chars = string.ascii_letters + string.digits + string.punctuation
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(f"\u2581{c}", -3.0) for c in chars] + [(c, -4.0) for c in chars]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _make_text_encoder(vocab_size: int) -> UMT5EncoderModel:
    torch.manual_seed(0)
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=32,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
    )
    return UMT5EncoderModel(config)


def _make_vae() -> AutoencoderKLWan:
    torch.manual_seed(0)
    return AutoencoderKLWan(  # type: ignore[no-untyped-call]
        base_dim=3,
        z_dim=LATENT_CHANNELS,
        in_channels=12,
        out_channels=12,
        is_residual=True,
        patch_size=2,
        latents_mean=[0.0] * LATENT_CHANNELS,
        latents_std=[1.0] * LATENT_CHANNELS,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        temperal_downsample=[False, True, True],
    )


def _make_transformer() -> WanTransformer3DModel:
    torch.manual_seed(0)
    return WanTransformer3DModel(  # type: ignore[no-untyped-call]
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=64,
    )


def make_tiny_wan_pipeline() -> WanPipeline:
    tokenizer = make_t5_tokenizer()
    return WanPipeline(  # type: ignore[no-untyped-call]
        tokenizer=tokenizer,
        text_encoder=_make_text_encoder(len(tokenizer)),
        vae=_make_vae(),
        scheduler=UniPCMultistepScheduler(  # type: ignore[no-untyped-call]
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
        ),
        transformer=_make_transformer(),
        transformer_2=None,
        expand_timesteps=True,
    )


def build_tiny_wan(path: Path) -> Path:
    """Write the pipeline folder at `path` (a no-op where it is already built)."""
    return save_atomically(make_tiny_wan_pipeline, Path(path))
