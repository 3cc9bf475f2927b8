"""Identifiers: unguessable, URL-safe, and readable where a person sees them."""

from __future__ import annotations

import secrets
import string
from datetime import datetime

_UPPER = string.ascii_uppercase + string.digits
_ALNUM = string.ascii_letters + string.digits


def random_chars(n: int, alphabet: str = _ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def new_id(prefix: str, n: int = 20) -> str:
    return f"{prefix}_{random_chars(n)}"


def new_order_id(now: datetime) -> str:
    """`ORD-YYYYMMDD-` and ten random characters (about 50 bits), as seed 000 shows."""
    return f"ORD-{now:%Y%m%d}-{random_chars(10, _UPPER)}"
