"""LoRA files given by URL: fetched through the outbound URL policy, checked against their
SHA-256 and kept by hash (`<EASEL_LORA_CACHE_DIR>/<sha256>.safetensors`).

The API fetches one at submit so that a wrong hash is refused before anything is charged; the
worker finds it there (`easel serve`) or fetches it again (another host). A file is renamed into
the cache only once its hash matched, so whatever the cache holds is what was asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

import httpx

from easel.config import Settings
from easel.errors import InvalidRequest
from easel.media.bodies import limited_chunks
from easel.net.pinned import send_checked
from easel.net.policy import url_policy

USER_AGENT = "easel-loras/1"
CHUNK = 1 << 20


def cached_lora(settings: Settings, sha256: str) -> Path:
    """Where the file of this hash is (or will be) kept."""
    return settings.loras_dir / f"{sha256}.safetensors"


async def fetch_lora(
    settings: Settings, url: str, sha256: str, *, url_param: str, hash_param: str
) -> Path:
    """The cached file whose SHA-256 is `sha256`, fetched from `url` when not cached yet."""
    path = cached_lora(settings, sha256)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    timeout = settings.lora_fetch_timeout
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-", suffix=".safetensors")
    try:
        with os.fdopen(fd, "wb") as out:
            digest = await _download(settings, url, url_param, out)
        if digest != sha256:
            raise InvalidRequest(
                f"{hash_param}: the file at {url!r} has SHA-256 {digest}, not {sha256}; "
                "send the hash of that exact file (sha256sum FILE)",
                param=hash_param,
            )
        os.replace(tmp, path)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise InvalidRequest(
            f"{url_param} {url!r} could not be fetched within {timeout:g} s", param=url_param
        ) from exc
    except httpx.TooManyRedirects as exc:
        raise InvalidRequest(
            f"{url_param} {url!r} redirected too many times; send the final URL", param=url_param
        ) from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise InvalidRequest(
            f"{url_param} {url!r} could not be fetched ({type(exc).__name__}: {exc})",
            param=url_param,
        ) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


async def _download(settings: Settings, url: str, param: str, out: BinaryIO) -> str:
    """Stream the body at `url` into `out`, at most EASEL_LORA_MAX_BYTES; its SHA-256."""
    limit = settings.lora_max_bytes
    too_large = InvalidRequest(
        f"{param} {url!r} is larger than {limit} bytes (EASEL_LORA_MAX_BYTES)", param=param
    )
    timeout = settings.lora_fetch_timeout
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
            headers={"user-agent": USER_AGENT, "accept-encoding": "identity"},
        )
        try:
            hasher = hashlib.sha256()
            chunks = limited_chunks(
                response, url, param, limit, too_large, what="file", chunk_size=CHUNK
            )
            async for chunk in chunks:
                hasher.update(chunk)
                await asyncio.to_thread(out.write, chunk)  # not on the event loop
            return hasher.hexdigest()
        finally:
            await response.aclose()
