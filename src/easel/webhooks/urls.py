"""Outbound URL safety for webhooks, callbacks and reference images.

A URL whose host resolves to a private, loopback, link-local, multicast or reserved address is
refused unless the operator allows them. At submit a host that does not resolve is accepted (DNS
can fail for a moment); at delivery the address that passed the check is the one connected to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from easel.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT = 3.0


class UnsafeURL(InvalidRequest):
    """The URL points at an address this server may not call."""


@dataclass(frozen=True)
class Target:
    """Where to connect for a URL: the checked address, plus what TLS and Host need."""

    url: str
    host: str
    port: int
    address: str


@dataclass(frozen=True)
class URLPolicy:
    """`allow_private`: anything goes; `allowed_networks`: CIDRs allowed despite being private."""

    allow_private: bool = False
    allowed_networks: tuple[str, ...] = ()

    def forbids(self, ip: IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv6Address):
            embedded = ip.ipv4_mapped or ip.sixtofour  # an IPv4 address inside: judge that one
            if embedded is not None:
                ip = embedded
        if self.allow_private:
            return False
        if any(ip in ipaddress.ip_network(net, strict=False) for net in self.allowed_networks):
            return False
        return not ip.is_global or ip.is_multicast or ip.is_reserved


def _parts(url: str, param: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(
            f"{param} must be an http(s) URL with a host, got {url!r}", param=param
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidRequest(f"{param} has an invalid port: {url!r}", param=param) from exc
    return parts.hostname, port


async def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT
    )
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def _refusal(param: str, url: str, ip: IPAddress) -> UnsafeURL:
    return UnsafeURL(
        f"{param} {url!r} resolves to {ip}, a private, loopback, link-local or reserved address; "
        "use a public URL (the operator can allow such addresses with EASEL_ALLOWED_NETWORKS "
        "or EASEL_ALLOW_PRIVATE_URLS)",
        param=param,
    )


async def check_url(url: str, param: str, policy: URLPolicy) -> None:
    """At submit: refuse a URL that resolves to a forbidden address; accept one that does not
    resolve now."""
    host, port = _parts(url, param)
    if policy.allow_private:
        return
    try:
        addresses = await resolve(host, port)
    except (OSError, TimeoutError):
        return
    for ip in addresses:
        if policy.forbids(ip):
            raise _refusal(param, url, ip)


async def pin(url: str, param: str, policy: URLPolicy) -> Target:
    """At delivery: resolve, check every address, and return the one to connect to."""
    host, port = _parts(url, param)
    try:
        addresses = await resolve(host, port)
    except (OSError, TimeoutError) as exc:
        raise UnsafeURL(f"{param} host {host!r} does not resolve: {exc}", param=param) from exc
    if not addresses:
        raise UnsafeURL(f"{param} host {host!r} has no addresses", param=param)
    for ip in addresses:
        if policy.forbids(ip):
            raise _refusal(param, url, ip)
    return Target(url=url, host=host, port=port, address=str(addresses[0]))


def pinned_request(
    method: str, target: Target, headers: Mapping[str, str], content: bytes | None = None
) -> httpx.Request:
    """A request that connects to the address that passed the check, not a fresh DNS answer."""
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
    return request


async def send_checked(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    param: str,
    policy: URLPolicy,
    *,
    max_redirects: int,
    headers: Mapping[str, str],
    content: bytes | None = None,
) -> httpx.Response:
    """Send to the pinned address, following redirects that pass the same check.

    The final response is streamed: the caller reads or closes it.
    """
    for _ in range(max_redirects + 1):
        target = await pin(url, param, policy)
        request = pinned_request(method, target, headers, content)
        response = await client.send(request, stream=True)
        location = response.headers.get("location")
        if not (response.is_redirect and location):
            return response
        await response.aclose()
        url = urljoin(url, location)
    raise httpx.TooManyRedirects(f"more than {max_redirects} redirects")
