"""Inpainting masks: OpenAI's convention (a PNG the size of the first image, whose fully
transparent pixels are the ones to edit) checked and converted once, at submit, into the
convention the pipelines take: a grayscale PNG, white (255) = repaint, black = keep."""

from __future__ import annotations

import io

from PIL import Image

from easel.errors import InvalidRequest
from easel.media.references import Reference

REPAINT = 255


def convert_mask(data: bytes, image: Reference, param: str = "mask") -> Reference:
    """The mask for `image` as a white-is-repaint grayscale PNG; a 400 naming `param` when it
    is not a PNG, has no alpha channel, is another size or marks nothing to edit."""
    try:
        with Image.open(io.BytesIO(data)) as decoded:
            fmt = decoded.format
            if fmt != "PNG":
                raise InvalidRequest(
                    f"{param} must be a PNG with an alpha channel, not {fmt or 'unknown'}",
                    param=param,
                )
            if decoded.size != (image.width, image.height):
                raise InvalidRequest(
                    f"{param} is {decoded.width}x{decoded.height} px; it must be the size of the "
                    f"first image, {image.width}x{image.height}",
                    param=param,
                )
            has_alpha = "A" in decoded.getbands() or "transparency" in decoded.info
            if not has_alpha:
                raise InvalidRequest(
                    f"{param} has no alpha channel ({decoded.mode}); make the areas to edit fully "
                    "transparent (alpha 0) in an RGBA PNG",
                    param=param,
                )
            alpha = decoded.convert("RGBA").getchannel("A")
    except InvalidRequest:
        raise
    except Exception as exc:  # Pillow raises many types on bad input
        raise InvalidRequest(
            f"{param} is not a readable PNG ({type(exc).__name__}: {exc})", param=param
        ) from exc
    repaint = alpha.point(lambda a: REPAINT if a == 0 else 0)
    if repaint.getbbox() is None:
        raise InvalidRequest(
            f"{param} has no fully transparent pixel, so nothing would be edited; make the "
            "areas to edit transparent (alpha 0)",
            param=param,
        )
    out = io.BytesIO()
    repaint.save(out, format="PNG")
    return Reference(
        data=out.getvalue(), content_type="image/png", width=image.width, height=image.height
    )
