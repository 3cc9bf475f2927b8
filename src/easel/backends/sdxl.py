"""Stable Diffusion XL and SDXL-Turbo, text-to-image and image-to-image; inpainting where the
catalog model declares it (dedicated inpainting weights, or a base model's components)."""

from __future__ import annotations

from easel.backends.common import DiffusersBackend


class SDXLBackend(DiffusersBackend):
    family = "sdxl"
    text_to_image = "StableDiffusionXLPipeline"
    image_to_image = "StableDiffusionXLImg2ImgPipeline"
    inpainting = "StableDiffusionXLInpaintPipeline"
    image_to_image_sized = False  # takes the reference's size, already fitted to the job's
