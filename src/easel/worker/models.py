"""Loaded pipelines held by one worker within a memory budget, least recently used unloaded first.

A model's size is measured when it loads: on CUDA the growth of `torch.cuda.memory_allocated`,
elsewhere the bytes of the parameters and buffers of the torch modules the backend holds. Before
loading a model the cache makes room for its size as last measured or, the first time, for its
weight files on disk; after loading it evicts until the budget holds. A model larger than the
whole budget still loads, alone.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from easel.backends.base import Backend
from easel.backends.registry import backend_class
from easel.backends.weights import on_disk, parts
from easel.catalog import Model
from easel.config import Settings
from easel.worker.memory import cuda_allocated, free_memory, oom_errors

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".gguf")


class ModelCache:
    def __init__(
        self,
        device: str,
        max_loaded: int,
        budget_bytes: int = 0,
        settings: Settings | None = None,
    ) -> None:
        """`budget_bytes` 0: no byte budget, only the `max_loaded` cap. `settings`: speedups."""
        self.device = device
        self.settings = settings
        self.max_loaded = max(1, max_loaded)
        self.budget_bytes = budget_bytes
        self._loaded: OrderedDict[str, Backend] = OrderedDict()
        self._sizes: dict[str, int] = {}  # last measured size per model id
        self._lock = threading.Lock()  # held for a whole load: readers use the published view
        self._view: tuple[list[str], int] = ([], 0)

    @property
    def loaded(self) -> list[str]:
        """Model ids, least recently used first (as of the last change; never waits on a load)."""
        return list(self._view[0])

    @property
    def loaded_bytes(self) -> int:
        return self._view[1]

    def _publish(self) -> None:
        ids = list(self._loaded)
        self._view = (ids, sum(self._sizes.get(model_id, 0) for model_id in ids))

    def size_of(self, model_id: str) -> int | None:
        return self._sizes.get(model_id)

    def get(self, model: Model, pinned: Collection[str] = ()) -> Backend:
        """The loaded backend for `model`, loading it (blocking) if needed; `pinned` models
        (in use) are never unloaded to make room."""
        with self._lock:
            backend = self._loaded.get(model.id)
            if backend is not None and backend.model == model:
                self._loaded.move_to_end(model.id)
                self._publish()
                return backend
            if backend is not None:  # the catalog entry changed: load it afresh
                self._unload(model.id)
            self._make_room(
                self._sizes.get(model.id) or weights_on_disk(model), keep=None, pinned=pinned
            )
            backend = self._load(model)
            self._loaded[model.id] = backend
            self._make_room(0, keep=model.id, pinned=pinned)
            self._publish()
            return backend

    def _load(self, model: Model) -> Backend:
        backend = backend_class(model.family)(model, self.device, self.settings)
        before = cuda_allocated(self.device)
        try:
            backend.load()
        except oom_errors() as exc:
            if not self._loaded:
                raise
            log.warning(
                "out of memory loading a model; unloading the others and retrying",
                extra={"action": "load_oom", "model": model.id, "error": str(exc)[:200]},
            )
            backend.unload()
            while self._loaded:
                self._unload(next(iter(self._loaded)))
            before = cuda_allocated(self.device)
            backend.load()
        after = cuda_allocated(self.device)
        size = after - before if after > before else module_bytes(backend)
        self._sizes[model.id] = size
        log.info(
            "model cached",
            extra={"action": "cache", "model": model.id, "bytes": size, "device": self.device},
        )
        return backend

    def _make_room(self, incoming: int, keep: str | None, pinned: Collection[str] = ()) -> None:
        """Unload least recently used models (never `keep` or `pinned`) until the cap and
        budget hold, or only those are left."""
        slots = self.max_loaded - (0 if keep else 1)
        while True:
            others = [m for m in self._loaded if m != keep and m not in pinned]
            if not others:
                return
            used = incoming + sum(self._sizes.get(m, 0) for m in self._loaded)
            over_budget = self.budget_bytes > 0 and used > self.budget_bytes
            if len(self._loaded) <= slots and not over_budget:
                return
            self._unload(others[0])

    def _unload(self, model_id: str) -> None:
        backend = self._loaded.pop(model_id)
        self._publish()
        backend.unload()
        del backend
        free_memory()
        log.info("model unloaded", extra={"action": "unload", "model": model_id})


def module_bytes(backend: Backend) -> int:
    """Bytes of the parameters and buffers of every torch module the backend holds."""
    seen: set[int] = set()
    total = 0
    for module in _modules(vars(backend).values()):
        for tensor in (*module.parameters(), *module.buffers()):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def _modules(values: Any) -> Iterator[Any]:
    """torch modules among `values`, looking one level into diffusers pipelines' components.

    Without torch imported there are none (a remote backend never imports it)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    for value in values:
        if isinstance(value, torch.nn.Module):
            yield value
        components = getattr(value, "components", None)
        if isinstance(components, dict):
            yield from (c for c in components.values() if isinstance(c, torch.nn.Module))


def weights_on_disk(model: Model) -> int:
    """Bytes of the weight files of the model's parts on this machine: a local folder or file,
    or a repo's snapshot in the Hugging Face cache (symlinks to its blobs followed once each);
    0 when none is here. A first load makes room for this much."""
    seen: set[Path] = set()
    total = 0
    for part in parts(model):
        path = on_disk(part) if part.field != "config" else None
        if path is None:
            continue
        try:
            files = [path] if path.is_file() else list(path.rglob("*"))
            for file in files:
                real = file.resolve()
                if file.suffix in WEIGHT_SUFFIXES and real.is_file() and real not in seen:
                    seen.add(real)
                    total += real.stat().st_size
        except OSError:
            continue
    return total
