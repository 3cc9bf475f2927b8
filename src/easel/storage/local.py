"""Outputs in a local folder, served by `GET /files/{key}` with an HMAC-signed expiry."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from pathlib import Path

from easel.storage.base import MissingObject, StoredObject

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class SignatureError(Exception):
    """The file URL's signature is wrong or expired."""


def check_key(key: str) -> str:
    if not _KEY.match(key) or ".." in key:
        raise ValueError(f"invalid storage key {key!r}")
    return key


class LocalStorage:
    def __init__(self, root: Path, secret: str, base_url: str, ttl_seconds: int) -> None:
        self.root = root
        self.secret = secret.encode()
        self.base_url = base_url.rstrip("/")
        self.ttl_seconds = ttl_seconds

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return StoredObject(key=key, content_type=content_type, size=len(data))

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise MissingObject(key) from exc

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def sign(self, key: str, expires: int) -> str:
        return hmac.new(self.secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, key: str, ttl_seconds: int | None = None) -> str:
        expires = int(time.time()) + (ttl_seconds or self.ttl_seconds)
        return f"{self.base_url}/files/{key}?expires={expires}&signature={self.sign(key, expires)}"

    def verify(self, key: str, expires: int, signature: str) -> Path:
        expected = self.sign(check_key(key), expires).encode()
        if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
            raise SignatureError("the file URL's signature is invalid")
        if expires < time.time():
            raise SignatureError("the file URL has expired; read the order's status for a new one")
        return self.path(key)
