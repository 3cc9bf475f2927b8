"""What every output store offers: put and get bytes under a key, and a URL that expires."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Protocol

# Files no client may see (outputs held by the safety check): under their own prefix, apart from
# the order folders, with a random name, and only ever linked with a signed, expiring URL.
PRIVATE_PREFIX = "private/"


def private_key(order_id: str, extension: str) -> str:
    """A new, unguessable key for a file of `order_id` that is never served publicly."""
    return f"{PRIVATE_PREFIX}{order_id}/{secrets.token_hex(16)}.{extension}"


def is_private(key: str) -> bool:
    return key.startswith(PRIVATE_PREFIX)


@dataclass(frozen=True)
class StoredObject:
    key: str
    content_type: str
    size: int


class MissingObject(LookupError):
    """Nothing is stored under this key."""


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> StoredObject: ...

    def get(self, key: str) -> bytes:
        """The bytes under `key`; MissingObject when there are none."""
        ...

    def url(self, key: str, ttl_seconds: int | None = None) -> str: ...

    def delete(self, key: str) -> None: ...
