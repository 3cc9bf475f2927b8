"""A reference photo with an EXIF orientation is stored upright at submit: its size is the one
it is seen at, and its mask is checked against that size."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from easel.config import Settings
from easel.errors import InvalidRequest
from easel.media.masks import convert_mask
from easel.media.references import ORIENTATION, check_image

SETTINGS = Settings(reference_min_side=64)


def portrait_photo() -> bytes:
    """A phone's portrait photo: stored 128x96 (landscape), to be turned 90° (orientation 6)."""
    image = Image.new("RGB", (128, 96), (200, 30, 30))
    image.paste((30, 30, 200), (0, 0, 64, 96))  # the left half, which becomes the top
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif, quality=95)
    return out.getvalue()


def mask(width: int, height: int) -> bytes:
    image = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, 8, 8))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_a_rotated_photo_is_stored_upright_and_its_mask_checked_at_that_size() -> None:
    reference = check_image(SETTINGS, portrait_photo(), "image")
    assert (reference.width, reference.height) == (96, 128)
    with Image.open(io.BytesIO(reference.data)) as stored:
        assert stored.size == (96, 128) and stored.getexif().get(ORIENTATION, 1) == 1
        top, bottom = np.asarray(stored.convert("RGB"))[[10, 118], 48]
    assert top[2] > 150 and bottom[0] > 150  # the blue half is on top
    assert convert_mask(mask(96, 128), reference).width == 96
    with pytest.raises(InvalidRequest, match="must be the size of the first image, 96x128"):
        convert_mask(mask(128, 96), reference)
