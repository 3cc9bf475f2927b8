"""Outbound HTTP for providers, through `easel.net`: every request goes to the address that passed
the check (`send_checked`). The channel's own base URL is the operator's configuration and may be
private (another Easel on the LAN); any other URL a provider hands back (status, result and output
URLs) must pass the outbound URL policy. Answers are read up to a byte limit."""

from __future__ import annotations

import functools
import io
import itertools
import ssl
from typing import Any
from urllib.parse import urlsplit

import httpx
from PIL import Image

from easel.backends.upstream.base import RemoteFailed, Response
from easel.config import Settings
from easel.media.bodies import declared_over
from easel.media.encoding import GeneratedImage
from easel.net.pinned import CREDENTIALS, send_checked
from easel.net.policy import URLPolicy, url_policy

USER_AGENT = "easel-upstream/1"
MAX_REDIRECTS = 3
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "WEBP": "image/webp"}
SAVE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
# ISO media files that hold still images (HEIF, AVIF), not clips: they must decode as images.
STILL_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif"}


class TooLarge(Exception):
    pass


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every provider client of the process (each takes tens of ms to
    build), from certifi as httpx's own default (no SSL_CERT_* from the environment)."""
    return httpx.create_ssl_context(trust_env=False)


class Clients:
    """A remote worker's pooled connections, spread over `count` httpx clients taken in turn:
    httpx looks at every connection of a pool on each request and each response's end, so one
    pool of many connections costs CPU per request in proportion to its size."""

    def __init__(self, count: int) -> None:
        self.all = [
            httpx.AsyncClient(
                trust_env=False,
                verify=_tls(),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
            )
            for _ in range(max(1, count))
        ]
        self._turns = itertools.cycle(self.all)

    def pick(self) -> httpx.AsyncClient:
        return next(self._turns)

    async def aclose(self) -> None:
        for client in self.all:
            await client.aclose()


class ChannelHTTP:
    """One per channel: the pooled clients, the trusted origin, the policy for everything else."""

    def __init__(self, settings: Settings, base_url: str, clients: Clients) -> None:
        self.settings = settings
        self.trusted = _origin(base_url) if base_url else None
        self.policy = url_policy(settings)
        self.clients = clients

    def _policy(self, url: str) -> URLPolicy:
        if self.trusted is not None and _origin(url) == self.trusted:
            return URLPolicy(allow_private=True)
        return self.policy

    async def call(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        send_headers = {"user-agent": USER_AGENT, "accept-encoding": "identity"}
        send_headers.update(headers or {})
        if self.trusted is not None and _origin(url) != self.trusted:
            # A URL from the provider's answer (status, result, cancel) on another origin:
            # the channel's key goes to the channel's own origin only.
            send_headers = {k: v for k, v in send_headers.items() if k.lower() not in CREDENTIALS}
        if json is not None:
            import json as jsonlib

            content = jsonlib.dumps(json).encode()
            send_headers.setdefault("content-type", "application/json")
        limit = timeout or self.settings.upstream_request_timeout
        response = await send_checked(
            self.clients.pick(),
            method,
            url,
            "provider URL",
            self._policy,  # each hop's: a redirect off the trusted origin passes the policy
            max_redirects=MAX_REDIRECTS,
            headers=send_headers,
            content=content,
            timeout=httpx.Timeout(limit, connect=min(limit, 10.0)),
        )
        try:
            body = await _read(response, self.settings.upstream_max_output_bytes)
        finally:
            await response.aclose()
        return Response(response.status_code, dict(response.headers), body)


async def _read(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared_over(declared, limit):
        raise TooLarge(f"the provider's answer declares {declared} bytes, over {limit}")
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"the provider's answer is over {limit} bytes")
    return bytes(body)


def sniff(
    data: bytes, seed: int, width: int, height: int, fmt: str, max_pixels: int
) -> GeneratedImage:
    """An output as Easel stores it: a clip (MP4, GIF) as is; an image of at most `max_pixels`
    decoded completely and, when the order asked for another format, encoded again in that one."""
    if len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] not in STILL_BRANDS:
        return GeneratedImage(data, "video/mp4", seed, width, height)
    if data[:6] in (b"GIF87a", b"GIF89a") and fmt == "gif":
        return GeneratedImage(data, "image/gif", seed, width, height)
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format or "unknown"
            if image.size[0] * image.size[1] > max_pixels:
                raise RemoteFailed(
                    f"the provider's output is {image.size[0]}x{image.size[1]} pixels, over "
                    f"{max_pixels} (EASEL_UPSTREAM_MAX_OUTPUT_PIXELS)"
                )
            image.load()
            size = image.size
            wanted = SAVE_FORMATS.get(fmt, "PNG")
            if kind not in IMAGE_TYPES or IMAGE_TYPES[kind] != IMAGE_TYPES[wanted]:
                buf = io.BytesIO()
                image.convert("RGB" if wanted == "JPEG" else "RGBA").save(buf, wanted)
                data, kind = buf.getvalue(), wanted
    except RemoteFailed:
        raise
    except Exception as exc:  # Pillow raises many types on bad input
        raise RemoteFailed(
            f"the provider's output is not a readable image or clip ({type(exc).__name__})"
        ) from exc
    return GeneratedImage(data, IMAGE_TYPES[kind], seed, size[0], size[1])
