"""Loaded pipelines held by one worker, least recently used unloaded first."""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict

from easel.backends.base import Backend
from easel.backends.registry import backend_class
from easel.catalog import Model

log = logging.getLogger(__name__)


class ModelCache:
    def __init__(self, device: str, max_loaded: int) -> None:
        self.device = device
        self.max_loaded = max(1, max_loaded)
        self._loaded: OrderedDict[str, Backend] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded)

    def get(self, model: Model) -> Backend:
        """The loaded backend for `model`, loading it (blocking) if needed."""
        with self._lock:
            backend = self._loaded.get(model.id)
            if backend is not None and backend.model == model:
                self._loaded.move_to_end(model.id)
                return backend
            while len(self._loaded) >= self.max_loaded:
                old_id, old = self._loaded.popitem(last=False)
                old.unload()
                log.info("model unloaded", extra={"action": "unload", "model": old_id})
            backend = backend_class(model.family)(model, self.device)
            backend.load()
            self._loaded[model.id] = backend
        gc.collect()
        return backend
