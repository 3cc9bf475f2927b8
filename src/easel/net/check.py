"""Outbound URL checks for webhooks, callbacks, reference images and providers.

A URL whose host resolves to an address the policy forbids is refused. At submit a host that does
not resolve is accepted (DNS can fail for a moment); at delivery the address that passed the check
is the one connected to (`pin`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from easel.errors import InvalidRequest
from easel.net.policy import IPAddress, URLPolicy
from easel.net.urls import parse_url

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


def _parts(url: str, param: str) -> tuple[str, int]:
    parsed = parse_url(url, param)
    return parsed.host, parsed.port


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
    except (OSError, TimeoutError, UnicodeError):
        return
    for ip in addresses:
        if policy.forbids(ip):
            raise _refusal(param, url, ip)


async def pin(url: str, param: str, policy: URLPolicy) -> Target:
    """At delivery: resolve, check every address, and return the one to connect to."""
    host, port = _parts(url, param)
    try:
        addresses = await resolve(host, port)
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise UnsafeURL(f"{param} host {host!r} does not resolve: {exc}", param=param) from exc
    if not addresses:
        raise UnsafeURL(f"{param} host {host!r} has no addresses", param=param)
    for ip in addresses:
        if policy.forbids(ip):
            raise _refusal(param, url, ip)
    return Target(url=url, host=host, port=port, address=str(addresses[0]))
