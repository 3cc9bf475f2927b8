"""Reference images as the worker decodes them: upright by their EXIF orientation, in RGB."""

from __future__ import annotations

import io

from PIL import Image, ImageOps, UnidentifiedImageError


def decode_image(data: bytes) -> Image.Image:
    """The image in `data` (PNG, JPEG or WebP, checked at submit), turned upright, as RGB."""
    try:
        decoded = Image.open(io.BytesIO(data))
        decoded.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"a reference image cannot be decoded: {exc}") from exc
    return ImageOps.exif_transpose(decoded).convert("RGB")
