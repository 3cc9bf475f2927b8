"""Z-Image (Tongyi-MAI), text-to-image and image-to-image.

Guidance is classifier-free guidance as usual; 0 (Z-Image-Turbo's default) turns it off and the
negative prompt with it. Flow matching: acceleration changes only the steps.
"""

from __future__ import annotations

from easel.backends.common import DiffusersBackend


class ZImageBackend(DiffusersBackend):
    family = "z-image"
    text_to_image = "ZImagePipeline"
    image_to_image = "ZImageImg2ImgPipeline"
    size_multiple = 16  # 8x VAE, then 2x2 patches
