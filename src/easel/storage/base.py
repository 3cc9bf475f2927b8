"""What every output store offers: put bytes under a key, and a URL that expires."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StoredObject:
    key: str
    content_type: str
    size: int


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> StoredObject: ...

    def url(self, key: str, ttl_seconds: int | None = None) -> str: ...

    def delete(self, key: str) -> None: ...
