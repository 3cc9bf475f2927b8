"""Which addresses this server may call: none private, loopback, link-local, multicast or
reserved, unless the operator allows them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from easel.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def url_policy(settings: Settings) -> URLPolicy:
    """EASEL_ALLOW_PRIVATE_URLS and EASEL_ALLOWED_NETWORKS as a policy."""
    return URLPolicy(settings.allow_private_urls, tuple(settings.allowed_networks))
