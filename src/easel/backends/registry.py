"""Model family -> backend class, imported lazily so the API never loads torch."""

from __future__ import annotations

import importlib

from easel.backends.base import Backend

FAMILIES: dict[str, str] = {
    "sdxl": "easel.backends.sdxl:SDXLBackend",
    "sdxl-turbo": "easel.backends.sdxl:SDXLBackend",
    "animatediff": "easel.backends.animatediff:AnimateDiffBackend",
    "wan": "easel.backends.wan:WanBackend",
    "z-image": "easel.backends.zimage:ZImageBackend",
    "qwen-image": "easel.backends.qwen_image:QwenImageBackend",
    "qwen-image-edit": "easel.backends.qwen_edit:QwenImageEditBackend",
    "upstream": "easel.backends.upstream.backend:UpstreamBackend",
}


def served_families() -> set[str]:
    return set(FAMILIES)


def backend_class(family: str) -> type[Backend]:
    if family not in FAMILIES:
        raise KeyError(f"no backend for model family {family!r}; known: {sorted(FAMILIES)}")
    module, name = FAMILIES[family].split(":")
    cls: type[Backend] = getattr(importlib.import_module(module), name)
    return cls
