"""What every output store offers: put and get bytes under a key, and a URL that expires."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
