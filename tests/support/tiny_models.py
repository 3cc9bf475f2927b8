"""Tiny, random-weight Stable Diffusion XL pipeline built fully offline for tests.

`build_tiny_sdxl(path)` writes a `save_pretrained()` folder that
`StableDiffusionXLPipeline.from_pretrained(path)` loads with HF_HUB_OFFLINE=1.
Sizes follow diffusers' own tiny SDXL test components, except the VAE, which
keeps four blocks so the latent scale stays 8x (fast at real image sizes).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 77
TEXT_HIDDEN_SIZE = 32
TEXT_PROJECTION_DIM = 32
ADDITION_TIME_EMBED_DIM = 8


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode table: one printable symbol per byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codepoints = {byte: byte for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in codepoints:
            codepoints[byte] = 256 + extra
            extra += 1
    return [chr(codepoints[byte]) for byte in range(256)]


def _clip_vocab() -> dict[str, int]:
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def _make_tokenizer(vocab: dict[str, int]) -> CLIPTokenizer:
    """Write vocab.json / merges.txt to a scratch folder and load a CLIPTokenizer from it."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        tokenizer: CLIPTokenizer = CLIPTokenizer.from_pretrained(
            folder, model_max_length=MODEL_MAX_LENGTH
        )
    return tokenizer


def _text_config(vocab: dict[str, int]) -> CLIPTextConfig:
    eos_id = vocab[EOS_TOKEN]
    return CLIPTextConfig(
        vocab_size=len(vocab),
        bos_token_id=vocab[BOS_TOKEN],
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        max_position_embeddings=MODEL_MAX_LENGTH,
        layer_norm_eps=1e-5,
        hidden_act="gelu",
        projection_dim=TEXT_PROJECTION_DIM,
    )


def _make_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(2, 4),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        # Both encoders' hidden states are concatenated.
        cross_attention_dim=2 * TEXT_HIDDEN_SIZE,
        addition_embed_type="text_time",
        addition_time_embed_dim=ADDITION_TIME_EMBED_DIM,
        # Six micro-conditioning time ids plus the pooled text embedding.
        projection_class_embeddings_input_dim=6 * ADDITION_TIME_EMBED_DIM + TEXT_PROJECTION_DIM,
        norm_num_groups=1,
    )


def _make_vae() -> AutoencoderKL:
    # Four blocks -> three downsamples -> 8x latent scale, like the real SDXL VAE.
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=256,
        # Weights are float32 already; upcasting only makes img2img log a warning.
        force_upcast=False,
    )


def _make_scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )


def make_tiny_sdxl_pipeline() -> StableDiffusionXLPipeline:
    """Build the tiny pipeline in memory (deterministic: every component is seeded)."""
    vocab = _clip_vocab()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_text_config(vocab))
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(vocab))
    return StableDiffusionXLPipeline(
        vae=_make_vae(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=_make_tokenizer(vocab),
        tokenizer_2=_make_tokenizer(vocab),
        unet=_make_unet(),
        scheduler=_make_scheduler(),
        image_encoder=None,
        feature_extractor=None,
    )


def build_tiny_sdxl(path: Path) -> Path:
    """Write the tiny SDXL pipeline folder at `path` (no-op if already built); return `path`."""
    path = Path(path)
    if (path / "model_index.json").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target, then rename, so no reader ever sees a half-written folder.
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        make_tiny_sdxl_pipeline().save_pretrained(staging)
        try:
            os.replace(staging, path)  # works if `path` is missing or an empty folder
        except OSError:
            if not (path / "model_index.json").exists():  # nobody else finished it
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
