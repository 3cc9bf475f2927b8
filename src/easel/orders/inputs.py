"""An order's further inputs beyond its first reference image: an edit's 2nd and 3rd images and
an inpainting's mask, stored under the order's id and named in `orders.inputs` (JSON text)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from easel.media.references import Reference


@dataclass(frozen=True)
class StoredInput:
    key: str
    reference: Reference


@dataclass(frozen=True)
class OrderInputs:
    images: tuple[str, ...] = ()  # storage keys of the 2nd.. images, in order
    mask: str | None = None  # storage key of the converted mask (white = repaint)

    def dump(self) -> str:
        """`orders.inputs`: '' when there is nothing beyond the first image."""
        if not self.images and self.mask is None:
            return ""
        return json.dumps({"images": list(self.images), "mask": self.mask}, sort_keys=True)

    @property
    def keys(self) -> list[str]:
        return [*self.images, *([self.mask] if self.mask else [])]


def plan_inputs(
    order_id: str, more: tuple[Reference, ...], mask: Reference | None
) -> tuple[OrderInputs, list[StoredInput]]:
    """Where an order's further inputs are stored, and what to store there."""
    stored = [
        StoredInput(f"{order_id}/reference-{n}.{r.content_type.removeprefix('image/')}", r)
        for n, r in enumerate(more, start=2)
    ]
    mask_input = StoredInput(f"{order_id}/mask.png", mask) if mask is not None else None
    inputs = OrderInputs(
        images=tuple(s.key for s in stored), mask=mask_input.key if mask_input else None
    )
    return inputs, stored + ([mask_input] if mask_input else [])


def load_inputs(text: str | None) -> OrderInputs:
    if not text:
        return OrderInputs()
    raw = json.loads(text)
    return OrderInputs(images=tuple(raw.get("images") or ()), mask=raw.get("mask"))
