"""Stable Diffusion XL and SDXL-Turbo, text-to-image and image-to-image."""

from __future__ import annotations

from easel.backends.common import DiffusersBackend


class SDXLBackend(DiffusersBackend):
    family = "sdxl"
    text_to_image = "StableDiffusionXLPipeline"
    image_to_image = "StableDiffusionXLImg2ImgPipeline"
    image_to_image_sized = False  # takes the reference's size, already fitted to the job's
