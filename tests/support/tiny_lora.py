"""A tiny LoRA for the tiny SDXL pipeline, made offline: PEFT adapters on its UNet's attention
projections with random (not zero) weights, saved the way diffusers' training scripts save one."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def build_tiny_sdxl_lora(model_dir: Path, out: Path, seed: int = 0, rank: int = 4) -> Path:
    """`out`: the .safetensors file to write (its folder is created)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet")
    # init_lora_weights=False: both matrices random, so the adapter changes the output at once.
    unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGETS, init_lora_weights=False)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionXLPipeline.save_lora_weights(
        out.parent,
        unet_lora_layers=get_peft_model_state_dict(unet),
        weight_name=out.name,
        safe_serialization=True,
    )
    return out
