"""Tiny, random-weight Qwen-Image-Edit-Plus pipeline built fully offline for tests.

`build_tiny_qwen_edit(path)` writes a `save_pretrained()` folder shaped like
`Qwen/Qwen-Image-Edit-2511`'s (its model_index names `Qwen2VLProcessor`), which Easel's edit
backend loads with HF_HUB_OFFLINE=1. The transformer and VAE are the tiny Qwen-Image ones; the
text encoder is a tiny Qwen2.5-VL whose vision tokens are real tokens of the byte-level
tokenizer, and the image processor keeps the vision tokens few.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, QwenImageEditPlusPipeline
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from easel.backends.qwen_edit import image_only_processor_class
from tests.support.qwen_tokenizer import SPECIAL_TOKENS, make_qwen2_tokenizer
from tests.support.tiny_folders import save_atomically
from tests.support.tiny_qwen_image import TEXT_HIDDEN_SIZE, _make_transformer, _make_vae

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
PATCH = 28  # the image processor's patch (14) times its merge size (2)


def _make_tokenizer() -> Qwen2Tokenizer:
    tokenizer = make_qwen2_tokenizer()
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [*SPECIAL_TOKENS[1:], *VISION_TOKENS]}
    )
    return tokenizer


def _make_text_encoder(tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLForConditionalGeneration:
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in VISION_TOKENS}
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
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 2048,
            "bos_token_id": None,
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
            "pad_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": TEXT_HIDDEN_SIZE,
        },
        hidden_size=TEXT_HIDDEN_SIZE,
        vocab_size=len(tokenizer),
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def make_tiny_qwen_edit_pipeline() -> QwenImageEditPlusPipeline:
    """Build the tiny pipeline in memory (deterministic: every component is seeded)."""
    tokenizer = _make_tokenizer()
    images = Qwen2VLImageProcessorPil(min_pixels=PATCH * PATCH * 4, max_pixels=PATCH * PATCH * 16)
    processor = image_only_processor_class()(image_processor=images, tokenizer=tokenizer)
    return QwenImageEditPlusPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_make_vae(),
        text_encoder=_make_text_encoder(tokenizer),
        tokenizer=tokenizer,
        processor=processor,
        transformer=_make_transformer(),
    )


class _AsShipped:
    """Saves the pipeline with model_index naming transformers' Qwen2VLProcessor, as the real
    weights do (the processor class above lives in Easel, not in transformers)."""

    def save_pretrained(self, path: Any) -> None:
        make_tiny_qwen_edit_pipeline().save_pretrained(path)
        index = Path(path) / "model_index.json"
        data = json.loads(index.read_text())
        data["processor"] = ["transformers", "Qwen2VLProcessor"]
        index.write_text(json.dumps(data, indent=2))


def build_tiny_qwen_edit(path: Path) -> Path:
    """Write the tiny Qwen-Image-Edit-Plus folder at `path` (no-op if built); return `path`."""
    return save_atomically(_AsShipped, Path(path))
