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

from diffusers import FlowMatchEulerDiscreteScheduler, QwenImageEditPlusPipeline
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from easel.backends.qwen_edit import image_only_processor_class
from tests.support.qwen_tokenizer import SPECIAL_TOKENS, make_qwen2_tokenizer
from tests.support.tiny_folders import save_atomically
from tests.support.tiny_qwen_image import _make_transformer, _make_vae, tiny_text_encoder

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
    return tiny_text_encoder(
        len(tokenizer),
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
        tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
    )


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
