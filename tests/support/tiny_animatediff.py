"""Tiny, random-weight AnimateDiff parts built fully offline for tests.

`build_tiny_animatediff(folder)` writes two `save_pretrained()` folders, as an operator would
have them: `folder/base`, a Stable Diffusion 1.5-style pipeline (what a repo such as
`emilianJR/epiCRealism` holds), and `folder/adapter`, a MotionAdapter (what
`guoyww/animatediff-motion-adapter-v1-5-2` holds). Both load with HF_HUB_OFFLINE=1. Sizes follow
diffusers' own tiny AnimateDiff test components, except the VAE, which keeps four blocks so the
latent scale stays 8x.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    MotionAdapter,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel

from tests.support.tiny_folders import save_atomically
from tests.support.tiny_models import (
    TEXT_HIDDEN_SIZE,
    _clip_vocab,
    _make_tokenizer,
    _text_config,
    make_tiny_vae,
)

BLOCK_OUT_CHANNELS = (32, 64)
LAYERS_PER_BLOCK = 2  # the adapter adds one motion module per UNet layer: the two must match


def _make_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=BLOCK_OUT_CHANNELS,
        layers_per_block=LAYERS_PER_BLOCK,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN_SIZE,
        norm_num_groups=2,
    )


def make_tiny_sd15_pipeline() -> StableDiffusionPipeline:
    """An SD 1.5-style text-to-image pipeline; PNDM is what SD 1.5 repos ship."""
    vocab = _clip_vocab()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_text_config(vocab))
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=make_tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=_make_tokenizer(vocab),
        unet=_make_unet(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def make_tiny_motion_adapter() -> MotionAdapter:
    torch.manual_seed(0)
    return MotionAdapter(
        block_out_channels=BLOCK_OUT_CHANNELS,
        motion_layers_per_block=LAYERS_PER_BLOCK,
        motion_norm_num_groups=2,
        motion_num_attention_heads=4,
    )


def build_tiny_animatediff(folder: Path) -> tuple[Path, Path]:
    """Write `folder/adapter` and `folder/base` (no-op where built); return (adapter, base)."""
    folder = Path(folder)
    adapter, base = folder / "adapter", folder / "base"
    save_atomically(make_tiny_motion_adapter, adapter, marker="config.json")
    save_atomically(make_tiny_sd15_pipeline, base)
    return adapter, base
