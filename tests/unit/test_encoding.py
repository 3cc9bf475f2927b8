"""Output files written in the background are the same files, and their failures surface."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

import pytest
from PIL import Image

from easel.media.encoding import encode_image, encode_later


def test_a_file_written_in_the_background_is_the_file_written_at_once() -> None:
    image = Image.new("RGB", (64, 48), (200, 30, 90))
    meta = {"model": "m", "prompt": "a red field"}
    with ThreadPoolExecutor(1) as encoders:
        later = encode_later(image, "png", 7, meta, encoders)
        now = encode_image(image, "png", 7, meta)
        assert later.data == now.data
    assert later.still is image
    assert (later.width, later.height, later.content_type) == (64, 48, "image/png")
    assert json.loads(Image.open(BytesIO(later.data)).info["parameters"])["seed"] == 7


def test_a_failed_background_encoding_raises_where_the_file_is_read() -> None:
    with ThreadPoolExecutor(1) as encoders:
        broken = encode_later(Image.new("CMYK", (8, 8)), "png", 1, {}, encoders)
        with pytest.raises(OSError, match="CMYK"):
            broken.data  # noqa: B018 - the read is the point
