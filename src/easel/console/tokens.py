"""Signed values: the session cookie, CSRF tokens, password-reset and invite links.

Each is HMAC-SHA256 with the server's secret key and a purpose, so a value made for one use is
refused for another."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def _mac(secret: str, purpose: str, value: str) -> str:
    digest = hmac.new(secret.encode(), f"{purpose}\0{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign(secret: str, purpose: str, value: str) -> str:
    return f"{value}.{_mac(secret, purpose, value)}"


def unsign(secret: str, purpose: str, signed: str) -> str | None:
    value, _, mac = signed.rpartition(".")
    if not value or not hmac.compare_digest(mac, _mac(secret, purpose, value)):
        return None
    return value


def csrf_token(secret: str, holder: str) -> str:
    """The CSRF token of a session token (or an anonymous visitor's nonce)."""
    return _mac(secret, "csrf", holder)


def csrf_ok(secret: str, holder: str, token: str) -> bool:
    return bool(token) and hmac.compare_digest(token, csrf_token(secret, holder))


def expiring(secret: str, purpose: str, value: str, seconds: float) -> str:
    """`value` (no dots) with an expiry, signed; `opened` gives it back until then."""
    expires = int(time.time() + seconds)
    raw = base64.urlsafe_b64encode(f"{value}|{expires}".encode()).decode().rstrip("=")
    return sign(secret, purpose, raw)


def opened(secret: str, purpose: str, token: str) -> str | None:
    raw = unsign(secret, purpose, token)
    if raw is None:
        return None
    try:
        value, _, expires = (
            base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode().rpartition("|")
        )
        if int(expires) < time.time():
            return None
    except ValueError:
        return None
    return value
