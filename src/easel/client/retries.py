"""When a request is sent again: after a connection error, a 429 or a 5xx, with exponential
backoff and jitter, or after the server's `Retry-After` when it gives one (up to a minute).
Creates carry an `Idempotency-Key`, the same on every try, so a retry never orders twice."""

from __future__ import annotations

import random

import httpx

from easel.client.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    EaselError,
    RateLimited,
    ServerError,
)

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 8.0
RETRY_AFTER_MAX = 60.0


def connection_error(exc: httpx.TransportError, method: str, url: str) -> APIConnectionError:
    kind = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
    return kind(f"{method} {url}: {type(exc).__name__}: {exc or 'connection failed'}")


def retryable(error: EaselError) -> bool:
    return isinstance(error, APIConnectionError | RateLimited | ServerError)


def delay(error: EaselError, attempt: int, max_retries: int) -> float | None:
    """Seconds to wait before try `attempt + 1` (0-based `attempt` just failed), or None: give
    up and raise `error`."""
    if attempt >= max_retries or not retryable(error):
        return None
    retry_after: float | None = None
    if isinstance(error, APIError):
        retry_after = error.retry_after
    if retry_after is not None:
        return retry_after if retry_after <= RETRY_AFTER_MAX else None
    backoff = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0**attempt)
    return backoff * (1 - 0.25 * random.random())
