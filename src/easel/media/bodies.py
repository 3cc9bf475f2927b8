"""A fetched body read as it arrives, within a byte limit: what reference images and LoRA files
by URL share. Compressed bodies are refused (a few bytes could expand past every limit before
they are counted)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx

from easel.errors import InvalidRequest


def declared_over(content_length: str, limit: int) -> bool:
    """Whether a Content-Length header declares more than `limit` bytes (one that is not ASCII
    digits declares nothing; however many digits it has, it is not parsed past the limit's)."""
    if re.fullmatch(r"[0-9]+", content_length) is None:
        return False
    digits = content_length.lstrip("0")
    return len(digits) > len(str(limit)) or int(digits or "0") > limit


async def limited_chunks(
    response: httpx.Response,
    url: str,
    param: str,
    limit: int,
    too_large: InvalidRequest,
    *,
    what: str,
    status_hint: str = "",
    chunk_size: int | None = None,
) -> AsyncIterator[bytes]:
    """The raw chunks of a 2xx, uncompressed body of at most `limit` bytes; `too_large` past it.
    `what` names the thing in the messages; `status_hint` follows the HTTP status one."""
    if not 200 <= response.status_code < 300:
        raise InvalidRequest(
            f"{param} {url!r} could not be fetched: the server answered HTTP "
            f"{response.status_code}{status_hint}",
            param=param,
        )
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise InvalidRequest(
            f"{param} {url!r} was served compressed ({encoding}); serve the {what} as is",
            param=param,
        )
    declared = response.headers.get("content-length", "")
    if declared_over(declared, limit):
        raise too_large
    size = 0
    async for chunk in response.aiter_raw(chunk_size):
        size += len(chunk)
        if size > limit:
            raise too_large
        yield chunk
