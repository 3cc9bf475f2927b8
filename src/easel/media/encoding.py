"""Generated outputs as files: one image encoded with its generation parameters embedded."""

from __future__ import annotations

import io
import json
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
    data: bytes
    content_type: str
    seed: int
    width: int
    height: int
    poster: bytes | None = None  # a clip's still (JPEG), stored beside it (media/video.py)


def encode_image(
    image: Image.Image, fmt: str, seed: int, metadata: dict[str, Any]
) -> GeneratedImage:
    """Encode with the generation parameters embedded (PNG text chunks, else EXIF description)."""
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
    return GeneratedImage(
        data=buf.getvalue(),
        content_type=CONTENT_TYPES[fmt],
        seed=seed,
        width=image.width,
        height=image.height,
    )
