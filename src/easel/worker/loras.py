"""The LoRA set of a batch, resolved to files the backend loads: catalog LoRAs by their source,
URL LoRAs from the worker's cache by hash (fetched through the outbound URL policy when missing)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from easel.backends.base import BackendFailure, LoraWeights
from easel.catalog import Catalog
from easel.config import Settings
from easel.errors import InvalidRequest
from easel.media.loras import fetch_lora
from easel.orders.loras import load_loras


def adapter_name(key: str) -> str:
    """A PEFT adapter name for a LoRA key (no dots: adapters are module-dict keys)."""
    return "easel_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _split_local(source: str) -> tuple[str, str]:
    """A local weights file as (its folder, its name)."""
    folder, name = os.path.split(os.path.expanduser(source))
    return folder, name


async def _cached(settings: Settings, url: str, sha256: str, what: str) -> Path:
    try:
        return await fetch_lora(settings, url, sha256, url_param=what, hash_param=what)
    except InvalidRequest as exc:
        raise BackendFailure("lora_unavailable", f"{exc.message}; the order was refunded") from exc


async def resolve_loras(
    catalog: Catalog, settings: Settings, stored: str | None
) -> tuple[LoraWeights, ...]:
    """The LoRAs of an order's `orders.loras` text, as the backend loads them."""
    found: list[LoraWeights] = []
    for use in load_loras(stored):
        trigger_words: tuple[str, ...] = ()
        if use.name is not None:
            lora = catalog.loras.get(use.name)
            if lora is None:
                raise BackendFailure(
                    "lora_unavailable",
                    f"LoRA {use.name!r} is not in this worker's catalog; the order was refunded",
                )
            trigger_words = lora.trigger_words
            if lora.is_url and lora.sha256:
                path = await _cached(settings, lora.source, lora.sha256, f"LoRA {use.name!r}")
                source, file = str(path.parent), path.name
            elif lora.file:  # a repo and the file in it
                source, file = lora.source, lora.file
            else:  # a local file
                source, file = _split_local(lora.source)
        elif use.url is not None and use.sha256 is not None:
            path = await _cached(settings, use.url, use.sha256, "LoRA URL")
            source, file = str(path.parent), path.name
        else:
            raise BackendFailure(
                "lora_unavailable", f"a LoRA entry of the order is incomplete: {use}"
            )
        found.append(
            LoraWeights(
                adapter=adapter_name(use.key),
                source=source,
                file=file,
                scale=use.scale,
                label=use.as_json(),
                trigger_words=trigger_words,
            )
        )
    return tuple(found)
