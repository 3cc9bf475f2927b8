"""Generated outputs as files: one image encoded with its generation parameters embedded, now
or in the background (`encode_later`: the device goes on while the file is written)."""

from __future__ import annotations

import io
import json
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

from PIL import Image, PngImagePlugin

CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "mp4": "video/mp4",
}
ANIMATION_FORMATS = ("mp4", "gif", "webp")  # the first is the default
IMAGE_FORMATS = ("png", "jpeg", "webp")  # the first is the default


@dataclass(frozen=True)
class GeneratedImage:
    encoded: bytes | Future[bytes]  # the file, or its encoding under way (`data` waits for it)
    content_type: str
    seed: int
    width: int
    height: int
    poster: bytes | None = None  # a clip's still (JPEG), stored beside it (media/video.py)
    still: Image.Image | None = None  # the pixels a still was encoded from (no decode to check)

    @property
    def data(self) -> bytes:
        """The file (blocks until a background encoding ends; raises what it raised)."""
        return self.encoded if isinstance(self.encoded, bytes) else self.encoded.result()


def encode_image(
    image: Image.Image, fmt: str, seed: int, metadata: dict[str, Any]
) -> GeneratedImage:
    """Encode with the generation parameters embedded (PNG text chunks, else EXIF description)."""
    return GeneratedImage(
        encoded=_encoded(image, fmt, seed, metadata),
        content_type=CONTENT_TYPES[fmt],
        seed=seed,
        width=image.width,
        height=image.height,
        still=image,
    )


def encode_later(
    image: Image.Image, fmt: str, seed: int, metadata: dict[str, Any], encoders: Executor
) -> GeneratedImage:
    """As `encode_image`, the encoding run by `encoders` while the caller goes on."""
    return GeneratedImage(
        encoded=encoders.submit(_encoded, image, fmt, seed, metadata),
        content_type=CONTENT_TYPES[fmt],
        seed=seed,
        width=image.width,
        height=image.height,
        still=image,
    )


def _encoded(image: Image.Image, fmt: str, seed: int, metadata: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    text = json.dumps({**metadata, "seed": seed}, ensure_ascii=False)
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text)
        for key in ("prompt", "model"):
            if key in metadata:
                info.add_itxt(key, str(metadata[key]))
        info.add_text("seed", str(seed))
        image.save(buf, format="PNG", pnginfo=info)
    else:
        exif = Image.Exif()
        # ImageDescription is ASCII-only: escape non-ASCII (a Chinese prompt) inside the JSON.
        exif[0x010E] = json.dumps({**metadata, "seed": seed}, ensure_ascii=True)
        image.convert("RGB").save(buf, format=fmt.upper(), exif=exif.tobytes(), quality=92)
    return buf.getvalue()
