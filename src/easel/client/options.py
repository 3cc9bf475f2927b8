"""Where the server is, the key, and how long anything may take: arguments first, then the
environment (EASEL_BASE_URL, EASEL_API_KEY), then defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass

import httpx

from easel import __version__

DEFAULT_BASE_URL = "http://localhost:7000"
USER_AGENT = f"easel-python/{__version__}"
LONG_POLL_SECONDS = 10.0  # `?wait=` of a status read while the events stream is not there


@dataclass(frozen=True)
class Options:
    base_url: str
    api_key: str | None
    timeout: float = 60.0  # one request: connect, each read, write
    max_retries: int = 2  # connection errors, 429 and 5xx
    wait_timeout: float = 900.0  # wait() / events() / download() when not given one
    poll_interval: float = 1.0  # status reads when the events stream is not there
    stream_timeout: float = 60.0  # silence on the events stream before it counts as dropped

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.wait_timeout <= 0 or self.stream_timeout <= 0:
            raise ValueError("timeouts must be positive: a wait never hangs forever")
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")

    def headers(self, auth: bool = True) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if auth and self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def url(self, path: str) -> str:
        return self.base_url + path

    def http_timeout(self, read: float | None = None) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=self.timeout if read is None else read)


def resolve(
    base_url: str | None,
    api_key: str | None,
    *,
    timeout: float,
    max_retries: int,
    wait_timeout: float,
    poll_interval: float,
    stream_timeout: float,
) -> Options:
    base = base_url or os.environ.get("EASEL_BASE_URL") or DEFAULT_BASE_URL
    return Options(
        base_url=base.rstrip("/"),
        api_key=api_key or os.environ.get("EASEL_API_KEY") or None,
        timeout=timeout,
        max_retries=max_retries,
        wait_timeout=wait_timeout,
        poll_interval=poll_interval,
        stream_timeout=stream_timeout,
    )
