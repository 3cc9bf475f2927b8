"""Catch numerical failure (NaN, or an all-black frame) in decoded images before encoding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from easel.backends.base import ImageSpec


class NumericalFailure(Exception):
    """The model produced NaN or an all-black image: a numerical failure, not a picture."""

    def __init__(self, order_ids: list[str], what: str) -> None:
        self.order_ids = order_ids  # the orders with at least one failed output
        self.what = what
        super().__init__(f"{what} in the outputs of {', '.join(order_ids)}")


def failure_in(array: Any) -> str | None:
    """What is wrong with one decoded image (floats in [0, 1]), or None when it looks sound."""
    values = np.asarray(array)
    if not np.isfinite(values).all():
        return "NaN values"
    if values.size and float(values.max()) <= 0.0:
        return "an all-black image"
    return None


def check_outputs(decoded: Any, specs: Sequence[ImageSpec]) -> None:
    """Raise NumericalFailure naming the orders whose outputs (one per spec: an image or a
    clip's frames, floats in [0, 1]) hold NaN or are all black."""
    bad: dict[str, str] = {}
    for spec, output in zip(specs, decoded, strict=True):
        what = failure_in(output)
        if what is not None:
            bad.setdefault(spec.order_id, what)
    if bad:
        raise NumericalFailure(list(bad), next(iter(bad.values())))


def checked_images(decoded: Any, specs: Sequence[ImageSpec]) -> list[Image.Image]:
    """PIL images from a pipeline's `output_type="np"` batch (N, H, W, C floats in [0, 1]),
    after `check_outputs`."""
    arrays = [np.asarray(image) for image in decoded]
    check_outputs(arrays, specs)
    return [Image.fromarray(to_uint8(array)) for array in arrays]


def to_uint8(array: np.ndarray) -> np.ndarray:
    pixels: np.ndarray = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels
