"""Wan makes sides that are multiples of 32 and crops back to the size asked: the first frame it
is given is the client's image fitted to the size asked, padded, so the crop is that image."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from easel.backends.common import fit_reference
from easel.backends.wan import centre_crop, first_frame


def test_first_frame_cropped_back_is_the_image_fitted_to_the_size_asked() -> None:
    rng = np.random.default_rng(7)
    image = Image.fromarray(rng.integers(0, 256, (64, 72, 3), dtype=np.uint8))
    data = io.BytesIO()
    image.save(data, "PNG")
    for width, height, size in ((72, 64, (96, 64)), (40, 64, (64, 64))):
        made = first_frame(data.getvalue(), width, height, 32)
        assert made.size == size
        back = centre_crop(np.asarray(made)[None], width, height)[0]
        asked = np.asarray(fit_reference(data.getvalue(), width, height).convert("RGB"))
        assert np.array_equal(back, asked)
    # 40 -> 64: 12 columns each side, copies of the image's edge columns.
    assert np.array_equal(np.asarray(made)[:, :12], np.repeat(back[:, :1], 12, axis=1))
