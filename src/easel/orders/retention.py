"""Outputs expire: the sweeper deletes them from storage once `outputs_expire_at` has passed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update

from easel.db.engine import Database
from easel.db.status import FINAL
from easel.db.tables import Order, Output
from easel.media.video import poster_key
from easel.orders.inputs import load_inputs
from easel.storage import Storage

log = logging.getLogger(__name__)


def stored_keys(order: Order, outputs: Sequence[Output]) -> list[str]:
    """Every file an order has in storage: its outputs (a clip's poster too), its first
    reference image and its further inputs (orders.inputs)."""
    keys = [o.storage_key for o in outputs]
    keys += [o.original_key for o in outputs if o.original_key]  # a blurred one's original
    keys += [poster_key(key) for key in keys if key.endswith(".mp4")]  # a clip's still
    keys += [order.reference_key] if order.reference_key else []
    return keys + load_inputs(order.inputs).keys


async def delete_keys(storage: Storage, keys: Sequence[str]) -> None:
    for key in keys:
        await asyncio.to_thread(storage.delete, key)


async def sweep_expired(db: Database, storage: Storage, now: datetime, limit: int = 100) -> int:
    """Delete the files of up to `limit` expired orders; return how many orders were swept."""
    async with db.transaction(readonly=True) as session:
        orders = list(
            await session.scalars(
                select(Order)
                .where(
                    Order.outputs_swept.is_(False),
                    Order.outputs_expire_at < now,
                    Order.status.in_(sorted(FINAL)),
                )
                .order_by(Order.outputs_expire_at)
                .limit(limit)
            )
        )
        order_ids = [o.id for o in orders]
        outputs: dict[str, list[Output]] = {}
        for output in await session.scalars(select(Output).where(Output.order_id.in_(order_ids))):
            outputs.setdefault(output.order_id, []).append(output)
        keys = [k for o in orders for k in stored_keys(o, outputs.get(o.id, []))]
    await delete_keys(storage, keys)
    if order_ids:
        async with db.transaction() as session:
            await session.execute(
                update(Order).where(Order.id.in_(order_ids)).values(outputs_swept=True)
            )
        log.info("outputs expired", extra={"action": "sweep", "orders": len(order_ids)})
    return len(order_ids)
