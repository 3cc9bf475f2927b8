from easel.storage.base import MissingObject, Storage, StoredObject
from easel.storage.local import LocalStorage

__all__ = ["LocalStorage", "MissingObject", "Storage", "StoredObject"]
