"""Inpainting's masks on the worker: fitted to the job's size, and the original put back outside
the mask, so only masked pixels change.

The feather lies inside the mask: the generated image's weight rises from the mask's edge to 1
over a band of a few pixels, never wider than the mask is thick there, so every masked pixel
changes (a thin stroke too) and every pixel outside the mask is the original's, bit for bit.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from easel.backends.base import Job
from easel.backends.decoding import decode_image

REPAINT_FROM = 128  # mask values at or above this are repainted
FEATHER_PER_1024 = 6  # feather width in pixels on a 1024-pixel side (at least 1)


@dataclass(frozen=True)
class Inpainting:
    """One order's inpainting inputs at the job's size, decoded once for its n images."""

    original: Image.Image
    mask: Image.Image
    weights: np.ndarray  # feather_weights(mask)


def inpaintings(job: Job) -> dict[str, Inpainting]:
    """Each order's original, mask and weights at the job's size (its image's own size: nothing
    is resampled, so the original comes back pixel for pixel outside the mask)."""
    found: dict[str, Inpainting] = {}
    for spec in job.images:
        if spec.order_id in found or spec.reference is None or spec.mask is None:
            continue
        original = decode_image(spec.reference)
        if original.size != (job.width, job.height):
            original = ImageOps.fit(original, (job.width, job.height), Image.Resampling.LANCZOS)
        mask = fit_mask(spec.mask, job.width, job.height)
        found[spec.order_id] = Inpainting(original, mask, feather_weights(mask))
    return found


def keep_unmasked(part: Inpainting, generated: Image.Image) -> Image.Image:
    """The generated image with its order's original put back outside the mask."""
    return composite(part.original, generated, part.weights)


def fit_mask(data: bytes, width: int, height: int) -> Image.Image:
    """The stored mask (grayscale PNG, white = repaint) as a two-level image of width x height."""
    with Image.open(io.BytesIO(data)) as decoded:
        mask = decoded.convert("L")
    if mask.size != (width, height):
        mask = ImageOps.fit(mask, (width, height), Image.Resampling.NEAREST)
    return mask.point(lambda v: 255 if v >= REPAINT_FROM else 0)


def on_canvas(image: Image.Image, width: int, height: int, fill: int | None = None) -> Image.Image:
    """`image` centred on a width x height canvas no smaller than it, its edge pixels repeated
    (or `fill`) around it: `crop_center` gives back the very pixels, with no resampling."""
    if image.size == (width, height):
        return image
    if image.width > width or image.height > height:
        raise ValueError(f"a {image.width}x{image.height} image does not fit {width}x{height}")
    left, top = (width - image.width) // 2, (height - image.height) // 2
    pixels = np.asarray(image)
    pad = [(top, height - image.height - top), (left, width - image.width - left)]
    pad += [(0, 0)] * (pixels.ndim - 2)
    if fill is None:
        return Image.fromarray(np.pad(pixels, pad, mode="edge"))
    return Image.fromarray(np.pad(pixels, pad, constant_values=fill))


def _shifted_extreme(values: np.ndarray, reduce: np.ufunc, edge: int | bool) -> np.ndarray:
    """Each pixel's min or max over its 3x3 neighbourhood (`edge` beyond the border)."""
    padded = np.pad(values, 1, constant_values=edge)
    rows = reduce(reduce(padded[:-2], padded[1:-1]), padded[2:])
    found: np.ndarray = reduce(reduce(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])
    return found


def feather_weights(mask: Image.Image) -> np.ndarray:
    """Per-pixel weight of the generated image: exactly 0 outside the mask, 1 in its core, and
    a ramp over the band next to its edge, the band narrowed where the mask is thinner (> 0 on
    every masked pixel)."""
    inside = np.asarray(mask) >= REPAINT_FROM
    radius = max(1, round(FEATHER_PER_1024 * max(mask.size) / 1024))
    # depth: steps (3x3, chessboard) to the nearest unmasked pixel, counted up to radius.
    depth = np.zeros(inside.shape, dtype=np.uint8)
    core = inside
    for _ in range(radius):
        depth += core
        core = _shifted_extreme(core, np.minimum, True)
    # A band no wider than the deepest pixel nearby (half the local thickness).
    band = depth
    for _ in range(radius):
        band = _shifted_extreme(band, np.maximum, 0)
    ramp = depth / np.maximum(band, 1)
    return np.where(inside, np.minimum(ramp, 1.0), 0.0)


def composite(original: Image.Image, generated: Image.Image, weights: np.ndarray) -> Image.Image:
    """`generated` where `weights` (feather_weights) is above 0, `original` everywhere else."""
    before = np.asarray(original.convert("RGB"))
    after = np.asarray(generated.convert("RGB").resize(original.size))
    weight = weights[..., None]
    blended = np.rint(before * (1 - weight) + after * weight).astype(np.uint8)
    return Image.fromarray(np.where(weight > 0, blended, before))
