"""Outputs expire: the sweeper deletes them from storage once `outputs_expire_at` has passed."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from sqlalchemy import select, update

from easel.db.engine import Database
from easel.db.status import FINAL
from easel.db.tables import Order, Output
from easel.media.video import poster_key
from easel.orders.inputs import load_inputs
from easel.storage import Storage

log = logging.getLogger(__name__)


async def sweep_expired(db: Database, storage: Storage, now: datetime, limit: int = 100) -> int:
    """Delete the outputs of up to `limit` expired orders; return how many orders were swept."""
    async with db.transaction(readonly=True) as session:
        rows = (
            await session.execute(
                select(Order.id, Output.storage_key)
                .outerjoin(Output, Output.order_id == Order.id)
                .where(
                    Order.outputs_swept.is_(False),
                    Order.outputs_expire_at < now,
                    Order.status.in_(sorted(FINAL)),
                )
                .order_by(Order.outputs_expire_at)
                .limit(limit)
            )
        ).all()
        order_ids = sorted({order_id for order_id, _ in rows})
        stored = (
            await session.execute(
                select(Order.reference_key, Order.inputs).where(Order.id.in_(order_ids))
            )
        ).all()
        references = [k for key, inputs in stored for k in [key, *load_inputs(inputs).keys]]
    keys = [key for _, key in rows if key is not None] + [k for k in references if k]
    keys += [poster_key(key) for key in keys if key.endswith(".mp4")]  # a clip's still
    for key in keys:
        await asyncio.to_thread(storage.delete, key)
    if order_ids:
        async with db.transaction() as session:
            await session.execute(
                update(Order).where(Order.id.in_(order_ids)).values(outputs_swept=True)
            )
        log.info("outputs expired", extra={"action": "sweep", "orders": len(order_ids)})
    return len(order_ids)
