from easel.storage.base import Storage, StoredObject
from easel.storage.local import LocalStorage

__all__ = ["LocalStorage", "Storage", "StoredObject"]
