"""Qwen-Image (Alibaba), text-to-image, image-to-image and inpainting; Chinese and English prompts.

Qwen-Image is not guidance-distilled: its pipeline's `guidance_scale` does nothing and real
classifier-free guidance is `true_cfg_scale`, active above 1 and only with a negative prompt.
So a job's guidance becomes `true_cfg_scale` as is (seed 001's default 7.5; Qwen suggests 4),
an empty negative prompt is sent as " " so guidance still applies, and guidance <= 1 runs
without the negative pass (half the transformer work). Flow matching: acceleration changes only
the steps.
"""

from __future__ import annotations

from typing import Any

from easel.backends.base import Job
from easel.backends.common import DiffusersBackend

CFG_THRESHOLD = 1.0  # true_cfg_scale at or below this is no guidance


class QwenImageBackend(DiffusersBackend):
    family = "qwen-image"
    text_to_image = "QwenImagePipeline"
    image_to_image = "QwenImageImg2ImgPipeline"
    inpainting = "QwenImageInpaintPipeline"
    size_multiple = 16  # 8x VAE, then 2x2 patches

    def guidance_kwargs(self, job: Job) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"prompt": [spec.prompt for spec in job.images]}
        if job.guidance > CFG_THRESHOLD:
            kwargs["true_cfg_scale"] = job.guidance
            kwargs["negative_prompt"] = [spec.negative_prompt or " " for spec in job.images]
        else:
            kwargs["true_cfg_scale"] = 1.0
        return kwargs
