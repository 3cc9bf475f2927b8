"""One parser for every outbound URL a client gives (webhooks, callbacks, reference images).

Python's and browsers' (WHATWG) URL parsers read some inputs differently: backslashes, tabs and
newlines, user info, numeric hosts such as `0x7f.1`, unclosed IPv6 brackets. Anything such is
refused with the field's name, never guessed at.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from easel.errors import InvalidRequest

SCHEMES = ("http", "https")
MAX_LABEL = 63
MAX_HOST = 253
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")  # controls, spaces and backslashes
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)


@dataclass(frozen=True)
class OutboundURL:
    url: str
    scheme: str
    host: str  # lower-case ASCII (IDNA), or an IP address without brackets
    port: int


def _refuse(param: str, url: str, why: str) -> InvalidRequest:
    shown = url if len(url) <= 200 else url[:200] + "…"
    return InvalidRequest(
        f"{param} must be an http(s) URL this server can call: {why}; got {shown!r}", param=param
    )


def parse_url(url: str, param: str) -> OutboundURL:
    """The URL's parts, or InvalidRequest naming `param` and what is wrong."""
    if _UNSAFE.search(url):
        raise _refuse(param, url, "it contains spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _refuse(param, url, str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise _refuse(param, url, "use http:// or https://")
    if "@" in parts.netloc:
        raise _refuse(param, url, "remove the user name and password")
    if parts.netloc.count("[") != parts.netloc.count("]"):
        raise _refuse(param, url, "an IPv6 address must be in closed brackets")
    host = parts.hostname or ""
    if not host:
        raise _refuse(param, url, "it has no host")
    if port == 0:
        raise _refuse(param, url, "port 0 cannot be called")
    return OutboundURL(url, scheme, _checked_host(host, url, param), port or _default(scheme))


def _default(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _checked_host(host: str, url: str, param: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    if any(not label for label in labels):
        raise _refuse(param, url, "its host has an empty label (two dots in a row?)")
    if _NUMERIC_LABEL.match(labels[-1]):
        raise _refuse(param, url, "a numeric host must be a dotted IPv4 address like 192.0.2.1")
    if any(len(label) > MAX_LABEL for label in labels):
        raise _refuse(param, url, f"host labels are at most {MAX_LABEL} characters")
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
        for label in ascii_host.split("."):
            if label.startswith("xn--"):
                label.encode("ascii").decode("idna")  # punycode that decodes
    except UnicodeError:
        raise _refuse(param, url, "its host is not a valid domain name") from None
    if len(ascii_host) > MAX_HOST:
        raise _refuse(param, url, f"a host name is at most {MAX_HOST} characters")
    return ascii_host
