"""Reference images for image-to-image: fetched from a URL or decoded from base64, then checked.

A URL is fetched from the address that passed the outbound URL check (redirects checked again),
within a time limit, and reading stops at the byte limit. The bytes are sniffed and fully decoded
with Pillow; the file extension and the declared content type are ignored.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
from dataclasses import dataclass

import httpx
from PIL import Image, ImageOps

from easel.config import Settings
from easel.errors import InvalidRequest
from easel.media.bodies import limited_chunks
from easel.net.pinned import send_checked
from easel.net.policy import url_policy

USER_AGENT = "easel-references/1"
ORIENTATION = 0x0112  # the EXIF tag
CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_DATA_URL = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class Reference:
    data: bytes
    content_type: str
    width: int
    height: int


async def load_reference(
    settings: Settings, value: str, param: str, *, allow_data_url: bool
) -> Reference:
    """The checked image that `value` (an http(s) URL, raw base64 or a data URL) stands for."""
    value = value.strip()
    if not value:
        raise InvalidRequest(f"{param} is empty; send an image URL or base64", param=param)
    scheme = _SCHEME.match(value)
    name = scheme.group(1).lower() if scheme else ""
    if name in ("http", "https"):
        data = await fetch(settings, value, param)
    elif name == "data":
        data = _from_data_url(settings, value, param, allow_data_url)
    elif scheme:
        raise InvalidRequest(
            f"{param} must be an http(s) URL or a base64 image, not a {name}: URL", param=param
        )
    else:
        data = _from_base64(settings, value, param)
    return await asyncio.to_thread(check_image, settings, data, param)


def _from_data_url(settings: Settings, value: str, param: str, allowed: bool) -> bytes:
    if not allowed:
        raise InvalidRequest(
            f"{param} must be the raw base64 string without a prefix such as "
            "`data:image/png;base64,`; remove everything up to and including the comma",
            param=param,
        )
    prefix = _DATA_URL.match(value)
    if prefix is None:
        raise InvalidRequest(
            f"{param} is a data URL that is not a base64 image; send "
            "`data:image/<png|jpeg|webp>;base64,<data>`",
            param=param,
        )
    return _from_base64(settings, value[prefix.end() :], param)


def _from_base64(settings: Settings, value: str, param: str) -> bytes:
    text = "".join(value.split())
    if len(text) > (settings.reference_max_bytes + 2) // 3 * 4:
        raise _too_large(settings, param)
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(
            f"{param} must be an http(s) URL or a base64-encoded image; it is neither "
            f"(not valid base64: {exc})",
            param=param,
        ) from exc


def _too_large(settings: Settings, param: str) -> InvalidRequest:
    limit = settings.reference_max_bytes
    return InvalidRequest(
        f"{param} is larger than {limit} bytes ({limit / 2**20:g} MB); send a smaller image",
        param=param,
    )


async def fetch(settings: Settings, url: str, param: str) -> bytes:
    """The body at `url`, or an InvalidRequest saying why it could not be had."""
    timeout = settings.reference_fetch_timeout
    try:
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(timeout=timeout, trust_env=False) as client,
        ):
            response = await send_checked(
                client,
                "GET",
                url,
                param,
                url_policy(settings),
                max_redirects=settings.reference_max_redirects,
                headers={
                    "user-agent": USER_AGENT,
                    "accept": "image/*",
                    "accept-encoding": "identity",
                },
            )
            try:
                return await _read_limited(settings, response, url, param)
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise InvalidRequest(
            f"{param} {url!r} could not be fetched within {timeout:g} s; "
            "use a faster host or send the image as base64",
            param=param,
        ) from exc
    except httpx.TooManyRedirects as exc:
        raise InvalidRequest(
            f"{param} {url!r} redirected more than {settings.reference_max_redirects} times; "
            "send the final URL",
            param=param,
        ) from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise InvalidRequest(
            f"{param} {url!r} could not be fetched ({type(exc).__name__}: {exc}); "
            "check that the URL is reachable from the internet",
            param=param,
        ) from exc


async def _read_limited(
    settings: Settings, response: httpx.Response, url: str, param: str
) -> bytes:
    body = bytearray()
    chunks = limited_chunks(
        response,
        url,
        param,
        settings.reference_max_bytes,
        _too_large(settings, param),
        what="image",
        status_hint="; send a URL that serves the image",
    )
    async for chunk in chunks:
        body += chunk
    return bytes(body)


def check_image(settings: Settings, data: bytes, param: str) -> Reference:
    """Format, size, sides, aspect ratio and pixel count; the image must decode completely."""
    if len(data) > settings.reference_max_bytes:
        raise _too_large(settings, param)
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format or "unknown"
            if fmt not in CONTENT_TYPES:
                raise InvalidRequest(
                    f"{param} must be a JPEG, PNG or WebP image; this one is {fmt}", param=param
                )
            width, height = image.size
            _check_geometry(settings, width, height, param)
            image.load()
            if image.getexif().get(ORIENTATION, 1) != 1:
                data, (width, height) = _upright(image, fmt)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(param, str(exc)) from exc
    except InvalidRequest:
        raise
    except Exception as exc:  # Pillow's decoders raise many types on bad input
        raise InvalidRequest(
            f"{param} is not a readable JPEG, PNG or WebP image ({type(exc).__name__}: {exc})",
            param=param,
        ) from exc
    return Reference(data=data, content_type=CONTENT_TYPES[fmt], width=width, height=height)


def _upright(image: Image.Image, fmt: str) -> tuple[bytes, tuple[int, int]]:
    """The image turned as its EXIF orientation says, re-encoded in its format without the
    tag: stored upright, so its size, the mask's check and every worker see the same pixels."""
    turned = ImageOps.exif_transpose(image)
    out = io.BytesIO()
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    turned.save(out, format=fmt, exif=turned.getexif(), **options)
    return out.getvalue(), turned.size


def _check_geometry(settings: Settings, width: int, height: int, param: str) -> None:
    pixel_cap = settings.reference_max_pixels
    if Image.MAX_IMAGE_PIXELS:  # past Pillow's own bomb threshold too
        pixel_cap = min(pixel_cap, Image.MAX_IMAGE_PIXELS)
    if width * height > pixel_cap:
        raise _bomb(param, f"{width}x{height} is more than {pixel_cap} pixels")
    low = settings.reference_min_side
    if min(width, height) < low:
        raise InvalidRequest(
            f"{param} is {width}x{height} px; each side must be at least {low} px", param=param
        )
    ratio = settings.reference_max_aspect
    if max(width, height) > ratio * min(width, height):
        raise InvalidRequest(
            f"{param} is {width}x{height} px; the aspect ratio must be within 1:{ratio:g} and "
            f"{ratio:g}:1, crop it",
            param=param,
        )


def _bomb(param: str, detail: str) -> InvalidRequest:
    return InvalidRequest(
        f"{param} declares too many pixels to decode safely ({detail}); send a smaller image",
        param=param,
    )
