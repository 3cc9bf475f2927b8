"""What a dialect is: one module that owns an API's requests, bodies, errors and routes.

Each dialect module builds one `Dialect` and `registry.DIALECTS` lists them; the app mounts their
routers and error shapes, and the webhook sender renders each delivery with its order's dialect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from easel.clock import iso
from easel.db.status import OrderStatus
from easel.db.tables import Order, Output
from easel.errors import EaselError
from easel.storage import Storage

# Canonical order -> the JSON body a dialect shows for it (status endpoint and callback).
Render = Callable[[Order, list[Output], Storage], dict[str, Any]]
ErrorShape = Callable[[EaselError], JSONResponse]


@dataclass(frozen=True)
class Dialect:
    name: str  # orders.dialect
    router: APIRouter
    callback_body: Render  # what a webhook / callback for one of its orders carries
    # Paths under `prefix` answer errors in `error_response`'s shape; None: the native shape.
    prefix: str | None = None
    error_response: ErrorShape | None = None


def output_urls(order: Order, outputs: list[Output], storage: Storage) -> list[str]:
    """Signed URLs of a completed order's outputs, valid from now (none once swept)."""
    if order.status != OrderStatus.COMPLETED or order.outputs_swept:
        return []
    return [storage.url(o.storage_key) for o in sorted(outputs, key=lambda o: o.index)]


def iso_seconds(moment: datetime | None) -> str | None:
    return iso(moment.replace(microsecond=0)) if moment else None
