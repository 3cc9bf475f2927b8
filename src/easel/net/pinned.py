"""Requests sent to the address that passed the check, following only redirects that pass it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import urljoin, urlsplit

import httpx

from easel.net.check import Target, pin
from easel.net.policy import URLPolicy


def pinned_request(
    method: str,
    target: Target,
    headers: Mapping[str, str],
    content: bytes | None = None,
    timeout: httpx.Timeout | None = None,
) -> httpx.Request:
    """A request that connects to the address that passed the check, not a fresh DNS answer.

    `timeout`: its connect / read / write / pool limits (a request built by hand carries none of
    the client's)."""
    url = httpx.URL(target.url)
    host = f"[{target.host}]" if ":" in target.host else target.host
    host_header = host if url.port is None else f"{host}:{url.port}"
    request = httpx.Request(
        method,
        url.copy_with(host=target.address),
        content=content,
        headers={**headers, "host": host_header},
    )
    if url.scheme == "https":
        request.extensions["sni_hostname"] = target.host
    if timeout is not None:
        request.extensions["timeout"] = timeout.as_dict()
    return request


async def send_checked(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    param: str,
    policy: URLPolicy | Callable[[str], URLPolicy],
    *,
    max_redirects: int,
    headers: Mapping[str, str],
    content: bytes | None = None,
    timeout: httpx.Timeout | None = None,
) -> httpx.Response:
    """Send to the pinned address, following redirects that pass the same check.

    As browsers and httpx do: a redirect to another origin drops the credentials
    (Authorization, Cookie), and 301/302/303 turn a POST into a GET without a body.
    The final response is streamed: the caller reads or closes it. `policy`: one for every hop,
    or each hop's by its URL (an origin trusted for itself only, not where it redirects).
    """
    for _ in range(max_redirects + 1):
        target = await pin(url, param, policy(url) if callable(policy) else policy)
        request = pinned_request(method, target, headers, content, timeout)
        response = await client.send(request, stream=True)
        location = response.headers.get("location")
        if not (response.is_redirect and location):
            return response
        await response.aclose()
        following = urljoin(url, location)
        if _origin(following) != _origin(url):
            headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIALS}
        if response.status_code in (301, 302, 303) and method != "HEAD":
            method, content = "GET", None
            headers = {k: v for k, v in headers.items() if k.lower() not in BODY_HEADERS}
        url = following
    raise httpx.TooManyRedirects(f"more than {max_redirects} redirects")


CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization"})
BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default
