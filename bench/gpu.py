"""GPU benchmark: plain diffusers against Easel's worker path, on full-size random-weight models.

    python bench/gpu.py [--workloads sdxl,turbo,animatediff,wan,edit1,edit3] [--iters 3] [--batch N]
                        [--compile-mode MODE | --no-compile] [--json FILE]
    python bench/gpu.py --cpu-smoke          # the same code path at tiny sizes, on the CPU

Builds SDXL (UNet, VAE, both CLIP text encoders), AnimateDiff (Stable Diffusion 1.5 with the
v1-5-2 motion adapter) and Wan 2.2 TI2V-5B (transformer, UMT5-XXL encoder, the 48-channel VAE)
from their public configs, written below, with random weights: nothing is downloaded; the
tokenizers are built from local files as in the tests. Wan runs 720p clips of 121 frames with 10
steps (time per step scales to the 50 of the catalog); it is not in the default set (--workloads
sdxl,turbo,animatediff,wan, best with --iters 1). Qwen-Image-Edit-Plus (2511: the 20B transformer,
Qwen2.5-VL-7B text encoder, its VAE) edits 1 (edit1) or 3 (edit3) 1024x1024 reference images into
a 1024x1024 image with 10 guided steps (the catalog has 40); not in the default set either. Its
58 GB of bf16 weights are built in memory on the device, never written to disk, and both paths
run the same pipeline object (plain first, then Easel's backend with it in place of `load()`).
Each workload runs twice:

- plain diffusers: the pipeline class, half precision (bf16 where the GPU has it), its default
  SDPA attention, one image per call, `output_type="pil"`;
- Easel: the worker's backend class (`easel.backends.registry`) loading the same weights, with
  `apply_speedups` and a Job of several ImageSpecs (one pipeline call), PNG/MP4 encoding and the
  NaN check included, as the worker runs it.

Warm-up calls are not timed; every timing is bracketed by torch.cuda.synchronize(). The table
gives seconds and outputs per second for each, their ratio, and the fraction of the GPU's
datasheet bf16 peak that the counted FLOPs of one output reach (torch's FlopCounterMode on a
one-step call; SDXL's UNet: 13.5 TFLOP per guided step at 1024x1024, its VAE decode 10.5).
Without CUDA it exits with status 2 unless --cpu-smoke is given.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import diffusers
import numpy as np
import torch
from diffusers import (
    AnimateDiffPipeline,
    AutoencoderKL,
    AutoencoderKLQwenImage,
    AutoencoderKLWan,
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    MotionAdapter,
    PNDMScheduler,
    QwenImageEditPlusPipeline,
    QwenImageTransformer2DModel,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from PIL import Image
from tests.support.tiny_models import BOS_TOKEN, EOS_TOKEN, _clip_vocab, _make_tokenizer
from tests.support.tiny_qwen_edit import VISION_TOKENS
from tests.support.tiny_qwen_edit import _make_tokenizer as make_qwen_edit_tokenizer
from tests.support.tiny_wan import make_t5_tokenizer
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    UMT5Config,
    UMT5EncoderModel,
)

from easel.backends.base import ImageSpec, Job
from easel.backends.loading import pick_dtype
from easel.backends.qwen_edit import image_only_processor_class
from easel.backends.registry import backend_class
from easel.backends.speedups import apply_speedups
from easel.catalog import Model
from easel.config import Settings

# --- Public configs (stabilityai/stable-diffusion-xl-base-1.0, sdxl-turbo,
# --- stable-diffusion-v1-5, guoyww/animatediff-motion-adapter-v1-5-2) ---------------------------

SDXL_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}
SD15_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}
VAE: dict[str, Any] = {  # SDXL's; SD 1.5's differs in scaling_factor and sample_size
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SD15_VAE = {**VAE, "sample_size": 512, "scaling_factor": 0.18215}
CLIP_L: dict[str, Any] = {  # text_encoder (SDXL and SD 1.5)
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "projection_dim": 768,
    "vocab_size": 49408,
}
CLIP_BIGG: dict[str, Any] = {  # text_encoder_2 (SDXL)
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "max_position_embeddings": 77,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
    "vocab_size": 49408,
}
MOTION_ADAPTER: dict[str, Any] = {
    "block_out_channels": [320, 640, 1280, 1280],
    "motion_layers_per_block": 2,
    "motion_max_seq_length": 32,
    "motion_mid_block_layers_per_block": 1,
    "motion_norm_num_groups": 32,
    "motion_num_attention_heads": 8,
    "use_motion_mid_block": True,
}
# Wan-AI/Wan2.2-TI2V-5B-Diffusers: transformer, vae (latents_mean/std left at 0 / 1: random
# weights), text_encoder (google/umt5-xxl's encoder), scheduler.
WAN_TRANSFORMER: dict[str, Any] = {
    "attention_head_dim": 128,
    "cross_attn_norm": True,
    "eps": 1e-6,
    "ffn_dim": 14336,
    "freq_dim": 256,
    "in_channels": 48,
    "num_attention_heads": 24,
    "num_layers": 30,
    "out_channels": 48,
    "patch_size": [1, 2, 2],
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 1024,
    "text_dim": 4096,
}
WAN_VAE: dict[str, Any] = {
    "base_dim": 160,
    "decoder_base_dim": 256,
    "dim_mult": [1, 2, 4, 4],
    "in_channels": 12,
    "is_residual": True,
    "latents_mean": [0.0] * 48,
    "latents_std": [1.0] * 48,
    "num_res_blocks": 2,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
    "temperal_downsample": [False, True, True],
    "z_dim": 48,
}
UMT5_XXL: dict[str, Any] = {
    "d_ff": 10240,
    "d_kv": 64,
    "d_model": 4096,
    "dense_act_fn": "gelu_new",
    "feed_forward_proj": "gated-gelu",
    "is_gated_act": True,
    "num_heads": 64,
    "num_layers": 24,
    "relative_attention_max_distance": 128,
    "relative_attention_num_buckets": 32,
    "vocab_size": 256384,
}
# Qwen/Qwen-Image-Edit-2511: transformer, vae (latents_mean/std left at 0 / 1), text_encoder
# (Qwen2.5-VL-7B-Instruct), scheduler; the processor's image processor keeps its defaults.
QWEN_EDIT_TRANSFORMER: dict[str, Any] = {
    "attention_head_dim": 128,
    "axes_dims_rope": [16, 56, 56],
    "guidance_embeds": False,
    "in_channels": 64,
    "joint_attention_dim": 3584,
    "num_attention_heads": 24,
    "num_layers": 60,
    "out_channels": 16,
    "patch_size": 2,
    "zero_cond_t": True,
}
QWEN_VAE: dict[str, Any] = {
    "attn_scales": [],
    "base_dim": 96,
    "dim_mult": [1, 2, 4, 4],
    "dropout": 0.0,
    "latents_mean": [0.0] * 16,
    "latents_std": [1.0] * 16,
    "num_res_blocks": 2,
    "temperal_downsample": [False, True, True],
    "z_dim": 16,
}
QWEN_VL_TEXT: dict[str, Any] = {
    "hidden_act": "silu",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "max_position_embeddings": 128000,
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-6,
    "rope_scaling": {"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"},
    "rope_theta": 1000000.0,
    "vocab_size": 152064,
}
QWEN_VL_VISION: dict[str, Any] = {
    "depth": 32,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "hidden_act": "silu",
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 3584,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "tokens_per_second": 2,
    "window_size": 112,
}
QWEN_SCHEDULER: dict[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "time_shift_type": "exponential",
    "use_dynamic_shifting": True,
}
WAN_SCHEDULER = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 5.0}
BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000}
SDXL_SCHEDULER = {**BETAS, "beta_schedule": "scaled_linear", "steps_offset": 1}
TURBO_SCHEDULER = {**SDXL_SCHEDULER, "timestep_spacing": "trailing"}
SD15_SCHEDULER = {**SDXL_SCHEDULER, "skip_prk_steps": True}
# What AnimateDiff's motion modules were trained with (the Easel backend sets the same).
ANIMATEDIFF_SCHEDULER = {
    **BETAS,
    "beta_schedule": "linear",
    "clip_sample": False,
    "timestep_spacing": "linspace",
    "steps_offset": 1,
}

# --cpu-smoke: the same configs with these keys shrunk.
TINY: dict[str, dict[str, Any]] = {
    "sdxl_unet": {
        "block_out_channels": [32, 64],
        "attention_head_dim": [2, 4],
        "transformer_layers_per_block": [1, 2],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "cross_attention_dim": 64,
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 6 * 8 + 32,
        "norm_num_groups": 8,
    },
    "sd15_unet": {
        "block_out_channels": [32, 64],
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "cross_attention_dim": 32,
        "norm_num_groups": 8,
    },
    "vae": {"block_out_channels": [8, 16, 32, 32], "layers_per_block": 1, "norm_num_groups": 8},
    "clip": {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 5,
        "projection_dim": 32,
    },
    "motion_adapter": {
        "block_out_channels": [32, 64],
        "motion_norm_num_groups": 8,
        "motion_num_attention_heads": 4,
    },
}

TINY["wan_transformer"] = {
    "attention_head_dim": 12,
    "ffn_dim": 32,
    "num_attention_heads": 2,
    "num_layers": 2,
    "rope_max_seq_len": 64,
    "text_dim": 32,
}
TINY["wan_vae"] = {
    "base_dim": 3,
    "decoder_base_dim": None,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
}
TINY["umt5"] = {
    "d_ff": 32,
    "d_kv": 8,
    "d_model": 32,
    "num_heads": 4,
    "num_layers": 2,
    "vocab_size": 256,
}

TINY["qwen_edit_transformer"] = {
    "attention_head_dim": 16,
    "axes_dims_rope": [8, 4, 4],
    "in_channels": 16,
    "joint_attention_dim": 16,
    "num_attention_heads": 3,
    "num_layers": 2,
    "out_channels": 4,
}
TINY["qwen_vae"] = {
    "base_dim": 8,
    "dim_mult": [1, 2, 2, 2],
    "latents_mean": [0.0] * 4,
    "latents_std": [1.0] * 4,
    "num_res_blocks": 1,
    "z_dim": 4,
}
TINY["qwen_vl_text"] = {
    "hidden_size": 16,
    "intermediate_size": 16,
    "max_position_embeddings": 2048,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
}
TINY["qwen_vl_vision"] = {
    "depth": 2,
    "fullatt_block_indexes": [1],
    "hidden_size": 16,
    "intermediate_size": 16,
    "num_heads": 2,
    "out_hidden_size": 16,
}
TINY["qwen_image_processor"] = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16}

# Dense bf16 tensor-core peak by device name (datasheets), first match wins.
PEAK_BF16_TFLOPS = [
    ("H200", 989.4),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),  # SXM ("H100 80GB HBM3")
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
]
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
EDIT_PROMPT = "put the lighthouse of Picture 1 on a cliff at dusk, as an oil painting"
NEGATIVE = "blurry, low quality"
SEED = 1234


@dataclass(frozen=True)
class Workload:
    name: str
    label: str
    family: str
    width: int
    height: int
    steps: int
    guidance: float
    batch: int  # outputs per Easel call (plain diffusers makes one per call)
    compile_mode: str
    frames: int = 0
    references: int = 0  # reference images of an edit


def workloads(smoke: bool) -> dict[str, Workload]:
    if smoke:
        return {
            "sdxl": Workload("sdxl", "SDXL 128px 2 steps", "sdxl", 128, 128, 2, 5.0, 2, "default"),
            "turbo": Workload(
                "turbo", "Turbo 64px 1 step", "sdxl-turbo", 64, 64, 1, 0.0, 4, "default"
            ),
            "animatediff": Workload(
                "animatediff",
                "AnimateDiff 64px 16f",
                "animatediff",
                64,
                64,
                2,
                7.5,
                1,
                "default",
                16,
            ),
            "wan": Workload("wan", "Wan TI2V 64x96 9f", "wan", 96, 64, 2, 5.0, 1, "default", 9),
            **{
                f"edit{n}": Workload(
                    f"edit{n}",
                    f"Qwen edit {n} ref 64px",
                    "qwen-image-edit",
                    64,
                    64,
                    2,
                    4.0,
                    1,
                    "default",
                    references=n,
                )
                for n in (1, 3)
            },
        }
    return {
        "sdxl": Workload(
            "sdxl",
            "SDXL 1024px 30 steps",
            "sdxl",
            1024,
            1024,
            30,
            5.0,
            4,
            "max-autotune-no-cudagraphs",
        ),
        # One step at batch 8 is launch-bound: CUDA graphs pay there.
        "turbo": Workload(
            "turbo", "Turbo 512px 1 step", "sdxl-turbo", 512, 512, 1, 0.0, 8, "reduce-overhead"
        ),
        "animatediff": Workload(
            "animatediff",
            "AnimateDiff 512px 16f 25 steps",
            "animatediff",
            512,
            512,
            25,
            7.5,
            1,
            "max-autotune-no-cudagraphs",
            16,
        ),
        "wan": Workload(
            "wan",
            "Wan 2.2 TI2V-5B 1280x704 121f 10 steps",
            "wan",
            1280,
            704,
            10,
            5.0,
            1,
            "max-autotune-no-cudagraphs",
            121,
        ),
        **{
            f"edit{n}": Workload(
                f"edit{n}",
                f"Qwen edit 2511 {n} ref 1024px 10 steps",
                "qwen-image-edit",
                1024,
                1024,
                10,
                4.0,
                1,
                "max-autotune-no-cudagraphs",
                references=n,
            )
            for n in (1, 3)
        },
    }


@dataclass
class Result:
    workload: str
    unit: str
    plain_s: float | None = None
    easel_s: float | None = None
    tflop_per_output: float | None = None  # text encoders, every denoiser step and the VAE
    denoiser_tflop: float | None = None
    agreement: float | None = None  # mean |plain - Easel| of the first output, 0-255 scale
    speedups: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- Building the models ------------------------------------------------------------------------


def shrink(config: dict[str, Any], part: str, smoke: bool) -> dict[str, Any]:
    return {**config, **TINY[part]} if smoke else dict(config)


def text_config(config: dict[str, Any], vocab: dict[str, int]) -> CLIPTextConfig:
    eos = vocab[EOS_TOKEN]  # the local tokenizer's ids, not the hub tokenizer's
    return CLIPTextConfig(
        **config, bos_token_id=vocab[BOS_TOKEN], eos_token_id=eos, pad_token_id=eos
    )


def save(pipe: Any, folder: Path, dtype: torch.dtype) -> None:
    pipe.to(dtype=dtype)
    pipe.save_pretrained(folder)


def build_sdxl(root: Path, device: str, dtype: torch.dtype, smoke: bool) -> None:
    """`root/sdxl` and `root/sdxl-turbo` (the same weights, Turbo's scheduler)."""
    vocab = _clip_vocab()
    clip = {**CLIP_L, **TINY["clip"]} if smoke else CLIP_L
    clip2 = {**CLIP_BIGG, **TINY["clip"]} if smoke else CLIP_BIGG
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(shrink(SDXL_UNET, "sdxl_unet", smoke))
        vae = AutoencoderKL.from_config(shrink(VAE, "vae", smoke))
        text_encoder = CLIPTextModel(text_config(clip, vocab))
        text_encoder_2 = CLIPTextModelWithProjection(text_config(clip2, vocab))
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=_make_tokenizer(vocab),
        tokenizer_2=_make_tokenizer(vocab),
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
    )
    save(pipe, root / "sdxl", dtype)
    turbo = root / "sdxl-turbo"
    turbo.mkdir()
    for part in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
        (turbo / part).symlink_to(root / "sdxl" / part, target_is_directory=True)
    EulerAncestralDiscreteScheduler.from_config(TURBO_SCHEDULER).save_pretrained(
        turbo / "scheduler"
    )
    index = json.loads((root / "sdxl" / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "EulerAncestralDiscreteScheduler"]
    (turbo / "model_index.json").write_text(json.dumps(index))


def build_animatediff(root: Path, device: str, dtype: torch.dtype, smoke: bool) -> None:
    """`root/animatediff/base` (an SD 1.5 pipeline) and `root/animatediff/adapter`."""
    vocab = _clip_vocab()
    clip = {**CLIP_L, **TINY["clip"]} if smoke else CLIP_L
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(shrink(SD15_UNET, "sd15_unet", smoke))
        vae = AutoencoderKL.from_config(shrink(SD15_VAE, "vae", smoke))
        text_encoder = CLIPTextModel(text_config(clip, vocab))
        adapter = MotionAdapter.from_config(shrink(MOTION_ADAPTER, "motion_adapter", smoke))
    base = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_make_tokenizer(vocab),
        unet=unet,
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    save(base, root / "animatediff" / "base", dtype)
    save(adapter, root / "animatediff" / "adapter", dtype)


def build_wan(root: Path, device: str, dtype: torch.dtype, smoke: bool) -> None:
    """`root/wan`: a Wan 2.2 TI2V-5B pipeline (text and first-frame video from one set)."""
    tokenizer = make_t5_tokenizer()
    torch.manual_seed(0)
    with torch.device(device):
        transformer = WanTransformer3DModel.from_config(
            shrink(WAN_TRANSFORMER, "wan_transformer", smoke)
        )
        vae = AutoencoderKLWan.from_config(shrink(WAN_VAE, "wan_vae", smoke))
        text_encoder = UMT5EncoderModel(UMT5Config(**shrink(UMT5_XXL, "umt5", smoke)))
    pipe = WanPipeline(  # type: ignore[no-untyped-call]
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=UniPCMultistepScheduler(**WAN_SCHEDULER),  # type: ignore[no-untyped-call]
        transformer=transformer,
        transformer_2=None,
        expand_timesteps=True,
    )
    save(pipe, root / "wan", dtype)


def build_qwen_edit(device: str, dtype: torch.dtype, smoke: bool) -> Any:
    """A Qwen-Image-Edit-Plus pipeline in memory on `device`: each part is made in float32 there
    and cast at once, so the peak is the transformer's float32 size (82 GB), not the whole."""
    tokenizer = make_qwen_edit_tokenizer()
    ids: dict[str, Any] = {t: tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    text = {
        **shrink(QWEN_VL_TEXT, "qwen_vl_text", smoke),
        "bos_token_id": None,
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "pad_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    }
    top: dict[str, Any] = {"hidden_size": text["hidden_size"], "vocab_size": text["vocab_size"]}
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=shrink(QWEN_VL_VISION, "qwen_vl_vision", smoke),
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        **top,
    )
    # The weights' class: torchvision's backend where it is installed, else the PIL one.
    images = Qwen2VLImageProcessor(**(TINY["qwen_image_processor"] if smoke else {}))
    torch.manual_seed(0)
    with torch.device(device):
        transformer = QwenImageTransformer2DModel.from_config(  # type: ignore[no-untyped-call]
            shrink(QWEN_EDIT_TRANSFORMER, "qwen_edit_transformer", smoke)
        ).to(dtype)
        free(device)
        text_encoder: Any = Qwen2_5_VLForConditionalGeneration(config)
        text_encoder = text_encoder.to(dtype).eval()
        free(device)
        vae = AutoencoderKLQwenImage.from_config(  # type: ignore[no-untyped-call]
            shrink(QWEN_VAE, "qwen_vae", smoke)
        ).to(dtype)
    pipe: Any = QwenImageEditPlusPipeline(  # type: ignore[no-untyped-call]
        scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_SCHEDULER),  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        processor=image_only_processor_class()(image_processor=images, tokenizer=tokenizer),
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reference_images(work: Workload) -> list[Image.Image]:
    """The edit's inputs: seeded noise at the output size (an edit keeps the last one's shape)."""
    rng = np.random.default_rng(SEED)
    shape = (work.height, work.width, 3)
    return [
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(work.references)
    ]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --- Running --------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, run: Callable[[], Any]) -> tuple[float, Any]:
    synchronize(device)
    started = time.perf_counter()
    out = run()
    synchronize(device)
    return time.perf_counter() - started, out


def free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def plain_pipeline(work: Workload, root: Path, device: str, dtype: torch.dtype) -> Any:
    if work.family == "wan":
        pipe = WanPipeline.from_pretrained(root / "wan", dtype=dtype)
        pipe.vae.to(torch.float32)  # as Wan's authors run it (and Easel does)
    elif work.family == "animatediff":
        adapter = MotionAdapter.from_pretrained(root / "animatediff" / "adapter", dtype=dtype)
        pipe = AnimateDiffPipeline.from_pretrained(
            root / "animatediff" / "base", motion_adapter=adapter, dtype=dtype
        )
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, **ANIMATEDIFF_SCHEDULER)
    else:
        folder = root / ("sdxl" if work.family == "sdxl" else "sdxl-turbo")
        pipe = StableDiffusionXLPipeline.from_pretrained(folder, dtype=dtype)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def plain_call(pipe: Any, work: Workload, seed: int, **extra: Any) -> Any:
    kwargs: dict[str, Any] = {
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "width": work.width,
        "height": work.height,
        "num_inference_steps": work.steps,
        "guidance_scale": work.guidance,
        "generator": torch.Generator("cpu").manual_seed(seed),
    }
    if work.frames:
        kwargs["num_frames"] = work.frames
    if work.references:
        del kwargs["guidance_scale"]  # guidance-distilled models only; this one is not
        kwargs |= {
            "prompt": EDIT_PROMPT,
            "image": reference_images(work),
            "true_cfg_scale": work.guidance,
        }
    with torch.inference_mode():
        return pipe(**kwargs | extra)


def tflop_per_output(pipe: Any, work: Workload) -> tuple[float, float]:
    """(all, denoiser) FLOPs of one output, counted on a one-step call: the denoiser's step
    (guidance's doubled batch included) times the steps, plus the text encoders and VAE once."""
    # One step of a schedule with shift_terminal (Qwen's) divides 0 by 0: the image is NaN,
    # the count is not affected.
    with FlopCounterMode(display=False) as counter, np.errstate(divide="ignore", invalid="ignore"):
        plain_call(pipe, work, SEED, num_inference_steps=1)
    counts = counter.get_flop_counts()
    denoiser = pipe.unet if hasattr(pipe, "unet") else pipe.transformer
    step = sum(counts[type(denoiser).__name__].values()) / 1e12
    once = sum(counts["Global"].values()) / 1e12 - step
    return once + step * work.steps, step * work.steps


def run_plain(
    work: Workload,
    root: Path,
    device: str,
    dtype: torch.dtype,
    warmup: int,
    iters: int,
    result: Result,
    built: Any = None,
) -> np.ndarray | None:
    pipe = built if built is not None else plain_pipeline(work, root, device, dtype)
    result.tflop_per_output, result.denoiser_tflop = tflop_per_output(pipe, work)
    for i in range(warmup):
        plain_call(pipe, work, SEED + 100 + i)
    seconds = []
    first = None
    for i in range(iters):
        took, out = timed(device, lambda i=i: plain_call(pipe, work, SEED + i))
        seconds.append(took)
        if i == 0 and not work.frames:
            first = np.asarray(out.images[0].convert("RGB"), dtype=np.float32)
    result.plain_s = statistics.median(seconds)
    return first


def easel_model(work: Workload, root: Path) -> Model:
    if work.family == "animatediff":
        source, base = root / "animatediff" / "adapter", str(root / "animatediff" / "base")
    elif work.family == "wan":
        wan = root / "wan"
        return Model(
            id="bench-wan",
            family="wan",
            source=str(wan),
            steps=work.steps,
            guidance=work.guidance,
            width=work.width,
            height=work.height,
            fps=24,
            frame_step=4,
            max_frames=121,
            seconds=5,
        )
    elif work.references:  # built in memory: no source, the bench hands the pipeline over
        return Model(
            id=f"bench-{work.name}",
            family=work.family,
            steps=work.steps,
            guidance=work.guidance,
            width=work.width,
            height=work.height,
            max_references=3,
        )
    else:
        source, base = root / ("sdxl" if work.family == "sdxl" else "sdxl-turbo"), None
    return Model(
        id=f"bench-{work.name}",
        family=work.family,
        source=str(source),
        base=base,
        steps=work.steps,
        guidance=work.guidance,
        width=work.width,
        height=work.height,
    )


def run_easel(
    work: Workload,
    root: Path,
    device: str,
    settings: Settings,
    warmup: int,
    iters: int,
    result: Result,
    built: Any = None,
) -> np.ndarray | None:
    model = easel_model(work, root)
    backend: Any = backend_class(work.family)(model, device)
    if built is not None:
        backend.pipe = built  # what load() makes of a saved folder, without writing 58 GB
    else:
        backend.load()
    done = apply_speedups(backend.pipe, settings, device)
    result.speedups = done.applied
    result.notes += [f"{name} skipped: {why}" for name, why in done.skipped.items()]
    clip_format = "mp4" if has_ffmpeg() else "gif"
    job = Job(
        model=model,
        width=work.width,
        height=work.height,
        steps=work.steps,
        guidance=work.guidance,
        images=specs(work),
        output_format=clip_format if work.frames else "png",
        frames=work.frames,
    )
    for _ in range(warmup):
        backend.run(job, lambda _step, _total: None)
    seconds = []
    outputs: Any = None
    for _ in range(iters):
        took, outputs = timed(device, lambda: backend.run(job, lambda _step, _total: None))
        seconds.append(took / work.batch)
    result.easel_s = statistics.median(seconds)
    backend.unload()
    if work.frames:
        return None
    return np.asarray(Image.open(io.BytesIO(outputs[0].data)).convert("RGB"), dtype=np.float32)


def specs(work: Workload) -> list[ImageSpec]:
    if not work.references:
        return [ImageSpec(f"bench-{i}", 0, PROMPT, NEGATIVE, SEED + i) for i in range(work.batch)]
    first, *more = (png_bytes(image) for image in reference_images(work))
    return [  # one order of `batch` images: one pipeline call, as the worker makes it
        ImageSpec("bench", i, EDIT_PROMPT, NEGATIVE, SEED + i, first, tuple(more))
        for i in range(work.batch)
    ]


def has_ffmpeg() -> bool:
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return False
    return True


def matmul_tflops(device: str, dtype: torch.dtype, n: int) -> float:
    """A measured matrix-product ceiling: n x n x n products, median of 10 after 3 warm-ups."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    seconds = sorted(timed(device, lambda: a @ b)[0] for _ in range(10))
    return 2 * n**3 / seconds[len(seconds) // 2] / 1e12


def peak_tflops(device: str, given: float | None) -> tuple[str, float | None]:
    if not device.startswith("cuda"):
        return "cpu", given
    name = torch.cuda.get_device_name()
    if given is not None:
        return name, given
    return name, next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


# --- Reporting --------------------------------------------------------------------------------


def failure(exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: list[Result], peak: float | None) -> str:
    head = (
        f"{'workload':<31}{'plain s/out':>12}{'easel s/out':>12}{'plain out/s':>12}"
        f"{'easel out/s':>12}{'ratio':>7}{'plain %peak':>12}{'easel %peak':>12}{'|diff|':>8}"
    )
    lines = [head]
    for r in results:
        rate = [None if s is None else 1 / s for s in (r.plain_s, r.easel_s)]
        ratio = r.plain_s / r.easel_s if r.plain_s and r.easel_s else None
        share = [
            None
            if s is None or peak is None or r.tflop_per_output is None
            else 100 * r.tflop_per_output / s / peak
            for s in (r.plain_s, r.easel_s)
        ]
        lines.append(
            f"{r.workload + ' (' + r.unit + ')':<31}{fmt(r.plain_s, '.3f'):>12}"
            f"{fmt(r.easel_s, '.3f'):>12}{fmt(rate[0], '.2f'):>12}{fmt(rate[1], '.2f'):>12}"
            f"{fmt(ratio, '.2f'):>7}{fmt(share[0], '.1f'):>12}{fmt(share[1], '.1f'):>12}"
            f"{fmt(r.agreement, '.2f'):>8}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--workloads", default="sdxl,turbo,animatediff")
    parser.add_argument("--iters", type=int, default=None, help="timed calls (3; smoke 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--batch", type=int, default=None, help="outputs per Easel call")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument(
        "--compile-mode",
        default=None,
        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
        help="instead of each workload's own",
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="instead of the table's")
    parser.add_argument("--json", type=Path, default=None, help="write the results here too")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the weights go")
    args = parser.parse_args()

    if not torch.cuda.is_available() and not args.cpu_smoke:
        print(
            "bench/gpu.py needs a CUDA GPU (torch.cuda.is_available() is False); "
            "run it with --cpu-smoke to check the code path at tiny sizes on the CPU",
            file=sys.stderr,
        )
        return 2
    smoke = args.cpu_smoke
    device = "cpu" if smoke else "cuda"
    dtype = pick_dtype(device)
    compile_on = (not smoke) if args.compile is None else args.compile
    iters = args.iters or (2 if smoke else 3)
    chosen = workloads(smoke)
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in chosen]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {', '.join(chosen)}")

    diffusers.utils.logging.disable_progress_bar()
    gpu, peak = peak_tflops(device, args.peak_tflops)
    ceiling = matmul_tflops(device, dtype, 512 if smoke else 8192)
    peak_from = "datasheet" if peak is not None else "measured matmul"
    print(
        f"device {gpu}, {dtype}, torch {torch.__version__}, diffusers {diffusers.__version__}; "
        f"measured {dtype} matmul {ceiling:.3g} TFLOP/s, peak {fmt(peak, '.1f')} TFLOP/s; "
        f"compile {'on' if compile_on else 'off'}",
        flush=True,
    )
    peak = peak if peak is not None else ceiling
    root = Path(tempfile.mkdtemp(prefix="easel-gpu-bench-", dir=args.work_dir))
    results = []
    try:
        started = time.perf_counter()
        if {"sdxl", "turbo"} & set(names):
            build_sdxl(root, device, dtype, smoke)
        if "animatediff" in names:
            build_animatediff(root, device, dtype, smoke)
        if "wan" in names:
            build_wan(root, device, dtype, smoke)
        free(device)
        print(f"models built and saved in {time.perf_counter() - started:.1f} s", flush=True)
        for name in names:
            work = chosen[name]
            if args.batch:
                work = Workload(**{**asdict(work), "batch": args.batch})
            mode = args.compile_mode or work.compile_mode
            settings = Settings(compile=compile_on, compile_mode=mode)
            result = Result(name, "clip" if work.frames else "image")
            compiled = f"compile mode {mode}" if compile_on else "not compiled"
            result.notes.append(f"{work.label}, Easel batch {work.batch}, {compiled}")
            plain = easel = built = None
            if work.references:  # plain runs it first; Easel's speedups then change it in place
                try:
                    started = time.perf_counter()
                    built = build_qwen_edit(device, dtype, smoke)
                    print(
                        f"{name}: built in memory in {time.perf_counter() - started:.1f} s",
                        flush=True,
                    )
                except Exception as exc:
                    result.notes.append(f"build failed: {failure(exc)}")
                    results.append(result)
                    free(device)
                    continue
            try:
                plain = run_plain(work, root, device, dtype, args.warmup, iters, result, built)
            except Exception as exc:  # report and go on with the other workloads
                result.notes.append(f"plain failed: {failure(exc)}")
            free(device)
            try:
                warm = max(args.warmup, 2 if compile_on else 1)  # compiling, then CUDA graphs
                easel = run_easel(work, root, device, settings, warm, iters, result, built)
            except Exception as exc:
                result.notes.append(f"easel failed: {failure(exc)}")
            built = None
            free(device)
            if plain is not None and easel is not None:
                result.agreement = float(np.abs(plain - easel).mean())
            results.append(result)
            plain_s, easel_s = fmt(result.plain_s, ".3f"), fmt(result.easel_s, ".3f")
            print(f"{name}: plain {plain_s} s, Easel {easel_s} s per {result.unit}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    for r in results:
        print(f"{r.workload}: speedups {', '.join(r.speedups) or 'none'}; " + "; ".join(r.notes))
        if r.tflop_per_output is not None:
            print(
                f"{r.workload}: {r.tflop_per_output:.4g} TFLOP per {r.unit}, "
                f"{r.denoiser_tflop:.4g} of them in the denoiser"
            )
    print(table(results, peak))
    print(
        f"ratio = plain s/out / easel s/out; %peak = counted FLOPs / time / {peak_from} peak; "
        "|diff| = mean |plain - Easel| of the first image, 0-255"
    )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
