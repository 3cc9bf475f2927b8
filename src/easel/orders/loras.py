"""The LoRAs an order runs with: its model's own plus the ones the request adds, checked.

An order's set is stored as canonical JSON (`orders.loras`, entries sorted, keys sorted), so the
follower claim batches only orders whose text is equal: the same LoRAs at the same scales.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from easel.catalog import Lora, Model
from easel.catalog.loader import LORA_SCALE_MAX, LORA_SCALE_MIN, SHA256, lora_fits
from easel.errors import InvalidRequest
from easel.net.urls import parse_url

# Families whose diffusers pipelines load LoRA adapters (backends/common.py).
LORA_FAMILIES = frozenset({"sdxl", "sdxl-turbo", "z-image", "qwen-image"})
NO_LORAS = "[]"


@dataclass(frozen=True)
class LoraUse:
    """One LoRA of an order: a catalog name, or a URL with the sha256 of its file."""

    scale: float
    name: str | None = None
    url: str | None = None
    sha256: str | None = None

    @property
    def key(self) -> str:
        """What tells two LoRAs apart: the catalog name, or the file's hash."""
        return self.name or f"sha256:{self.sha256}"

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"scale": self.scale}
        for field in ("name", "url", "sha256"):
            if getattr(self, field) is not None:
                data[field] = getattr(self, field)
        return data


def dump_loras(loras: Sequence[LoraUse]) -> str:
    """The canonical text of a set of LoRAs (what `orders.loras` holds)."""
    entries = sorted((u.as_json() for u in loras), key=lambda d: (d.get("name") or "", str(d)))
    return json.dumps(entries, sort_keys=True, separators=(",", ":"))


def load_loras(text: str | None) -> list[LoraUse]:
    if not text:
        return []
    return [
        LoraUse(
            scale=float(d["scale"]), name=d.get("name"), url=d.get("url"), sha256=d.get("sha256")
        )
        for d in json.loads(text)
    ]


def _scale(value: Any, default: float, param: str) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{param} must be a number, got {value!r}", param=param)
    if not LORA_SCALE_MIN <= value <= LORA_SCALE_MAX:
        raise InvalidRequest(
            f"{param} must be between {LORA_SCALE_MIN:g} and {LORA_SCALE_MAX:g}, got {value}",
            param=param,
        )
    return float(value)


def _named(
    known: Mapping[str, Lora], model: Model, model_alias: str, name: Any, scale: Any, at: str
) -> LoraUse:
    fitting = sorted(n for n, lora in known.items() if lora_fits(lora.family, model.family))
    if not isinstance(name, str) or name not in known:
        raise InvalidRequest(
            f"{at}.name: unknown LoRA {name!r}; installed for {model_alias}: "
            f"{', '.join(fitting) or 'none'}",
            param=f"{at}.name",
        )
    lora = known[name]
    if not lora_fits(lora.family, model.family):
        raise InvalidRequest(
            f"{at}.name: LoRA {name!r} is for {lora.family} models and {model_alias!r} is a "
            f"{model.family} model; LoRAs for it: {', '.join(fitting) or 'none'}",
            param=f"{at}.name",
        )
    return LoraUse(scale=_scale(scale, lora.scale, f"{at}.scale"), name=name)


def _by_url(url: Any, sha256: Any, scale: Any, at: str) -> LoraUse:
    if not isinstance(url, str):
        raise InvalidRequest(f"{at}.url must be a string", param=f"{at}.url")
    parse_url(url, f"{at}.url")
    if not isinstance(sha256, str) or not SHA256.match(sha256.lower()):
        raise InvalidRequest(
            f"{at}.sha256 is required with a url and must be the file's SHA-256 as 64 hex "
            f"digits (sha256sum FILE), got {sha256!r}",
            param=f"{at}.sha256",
        )
    return LoraUse(scale=_scale(scale, 1.0, f"{at}.scale"), url=url, sha256=sha256.lower())


def check_loras(
    known: Mapping[str, Lora],
    model: Model,
    model_alias: str,
    items: Sequence[Mapping[str, Any]] | None,
    param: str = "loras",
) -> tuple[tuple[LoraUse, ...], tuple[LoraUse, ...]]:
    """(the request's own LoRAs, the order's whole set: the model's then the request's, a
    request's scale replacing the model's for the same LoRA). Errors name the field."""
    added: list[LoraUse] = []
    for number, item in enumerate(items or ()):
        at = f"{param}[{number}]"
        if not isinstance(item, Mapping):
            raise InvalidRequest(f"{at} must be an object", param=at)
        unknown = sorted(set(item) - {"name", "url", "sha256", "scale"})
        if unknown:
            raise InvalidRequest(
                f"{at} has unknown field(s) {unknown}; give name and scale, or url, sha256 and "
                "scale",
                param=at,
            )
        name, url = item.get("name"), item.get("url")
        if (name is None) == (url is None):
            raise InvalidRequest(
                f"{at} needs either `name` (an installed LoRA) or `url` with `sha256`",
                param=at,
            )
        if name is not None:
            use = _named(known, model, model_alias, name, item.get("scale"), at)
        else:
            use = _by_url(url, item.get("sha256"), item.get("scale"), at)
        if any(u.key == use.key for u in added):
            raise InvalidRequest(f"{at}: {use.key} is listed twice", param=at)
        added.append(use)
    if added and model.family not in LORA_FAMILIES:
        raise InvalidRequest(
            f"{model_alias!r} is a {model.family} model, which takes no LoRAs; remove {param}",
            param=param,
        )
    mine = {u.key for u in added}
    own = [LoraUse(scale=float(s), name=n) for n, s in model.loras.items() if n not in mine]
    return tuple(added), (*own, *added)
