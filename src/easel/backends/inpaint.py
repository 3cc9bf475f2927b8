"""Inpainting's masks on the worker: fitted to the job's size, and the original put back outside
the mask, so only masked pixels change.

The feather lies inside the mask: its weight is 0 on and outside the mask's edge and grows to 1
a few pixels in, so the generated part blends in while every pixel outside the mask is the
original's, bit for bit.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter, ImageOps

REPAINT_FROM = 128  # mask values at or above this are repainted
FEATHER_PER_1024 = 6  # feather width in pixels on a 1024-pixel side (at least 1)


def fit_mask(data: bytes, width: int, height: int) -> Image.Image:
    """The stored mask (grayscale PNG, white = repaint) as a two-level image of width x height."""
    with Image.open(io.BytesIO(data)) as decoded:
        mask = decoded.convert("L")
    if mask.size != (width, height):
        mask = ImageOps.fit(mask, (width, height), Image.Resampling.NEAREST)
    return mask.point(lambda v: 255 if v >= REPAINT_FROM else 0)


def feather_weights(mask: Image.Image) -> np.ndarray:
    """Per-pixel weight of the generated image: 0 outside the mask, rising to 1 inside it."""
    inside = np.asarray(mask) >= REPAINT_FROM
    radius = max(1, round(FEATHER_PER_1024 * max(mask.size) / 1024))
    eroded = mask.filter(ImageFilter.MinFilter(2 * radius + 1))
    soft = np.asarray(eroded.filter(ImageFilter.GaussianBlur(radius / 2)), dtype=np.float64) / 255
    return np.where(inside, soft, 0.0)


def composite(original: Image.Image, generated: Image.Image, mask: Image.Image) -> Image.Image:
    """`generated` inside the mask (feathered), `original` everywhere else."""
    before = np.asarray(original.convert("RGB"))
    after = np.asarray(generated.convert("RGB").resize(original.size))
    weight = feather_weights(mask)[..., None]
    blended = np.rint(before * (1 - weight) + after * weight).astype(np.uint8)
    return Image.fromarray(np.where(weight > 0, blended, before))
