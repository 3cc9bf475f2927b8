"""The inpainting feather: every masked pixel changes (a thin stroke too), its core fully, and no
unmasked pixel at all; the original comes back pixel for pixel through an odd-sized canvas."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from easel.backends.common import crop_center, round_up
from easel.backends.inpaint import feather_weights, on_canvas


@pytest.mark.parametrize("width", [1, 3, 12, 20, 300])
def test_every_masked_pixel_has_weight_and_the_core_is_one(width: int) -> None:
    mask = Image.new("L", (1024, 1024), 0)
    mask.paste(255, (100, 200, 100 + width, 900))
    weights = feather_weights(mask)
    inside = np.asarray(mask) == 255
    assert weights[inside].min() > 0
    assert weights[inside].max() == 1.0
    assert (weights[~inside] == 0).all()
    if width > 24:  # thicker than two feather bands: a ramp at the edge, 1 beyond it
        assert weights[500, 100] < 0.5 and (weights[500, 110 : 90 + width] == 1).all()


def test_an_odd_image_comes_back_pixel_for_pixel_from_its_canvas() -> None:
    rng = np.random.default_rng(5)
    image = Image.fromarray(rng.integers(0, 256, (603, 1001, 3), dtype=np.uint8))
    canvas = on_canvas(image, round_up(1001, 8), round_up(603, 8))
    assert canvas.size == (1008, 608)
    back = crop_center(canvas, 1001, 603)
    assert (np.asarray(back) == np.asarray(image)).all()
