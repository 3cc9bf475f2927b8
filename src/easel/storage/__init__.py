from easel.storage.base import (
    MissingObject,
    Storage,
    StoredObject,
    is_private,
    private_key,
)
from easel.storage.local import LocalStorage

__all__ = [
    "LocalStorage",
    "MissingObject",
    "Storage",
    "StoredObject",
    "is_private",
    "private_key",
]
