"""The body of `POST /api/v1/generate` from keyword arguments: the same arguments always give
the same body, so a retry or `easel resume` with the same Idempotency-Key is the same request."""

from __future__ import annotations

import base64
import mimetypes
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ImageInput = str | bytes | Path


def new_idempotency_key() -> str:
    return f"easel-{uuid.uuid4().hex}"


def image_value(image: ImageInput) -> str:
    """A reference image as the API takes it: a URL or base64 string as given; a file or bytes
    as a base64 data URL."""
    if isinstance(image, str):
        return image
    if isinstance(image, Path):
        mime = mimetypes.guess_type(image.name)[0] or "application/octet-stream"
        data = image.read_bytes()
    else:
        mime, data = "application/octet-stream", image
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def generate_body(
    *,
    prompt: str,
    style: str,
    product_type: str,
    negative_prompt: str | None,
    width: int | None,
    height: int | None,
    seed: int | None,
    steps: int | None,
    guidance_scale: float | None,
    output_format: str | None,
    llm_enhance: bool | None,
    webhook_url: str | None,
    image: ImageInput | None,
    strength: float | None,
    extra_body: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Fields left None are left out (the server's defaults apply)."""
    fields: dict[str, Any] = {
        "style": style,
        "product_type": product_type,
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "width": width,
        "height": height,
        "seed": seed,
        "steps": steps,
        "guidance_scale": guidance_scale,
        "output_format": output_format,
        "llm_enhance": llm_enhance,
        "webhook_url": webhook_url,
        "image": image_value(image) if image is not None else None,
        "strength": strength,
    }
    body = {k: v for k, v in fields.items() if v is not None}
    return body | dict(extra_body or {})
