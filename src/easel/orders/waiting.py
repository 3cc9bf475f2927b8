"""Waiting for an order to finish, for APIs that answer synchronously (OpenAI Images).

Each look is its own short read transaction, so a waiting request holds no lock and no
connection between looks, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import asyncio
import time

from easel.db.engine import Database
from easel.db.status import FINAL
from easel.db.tables import Order, Output
from easel.errors import NotFound
from easel.orders.lifecycle import get_outputs


async def wait_until_final(
    db: Database, order_id: str, timeout: float, interval: float
) -> tuple[Order, list[Output]] | None:
    """The finished order and its outputs, or None when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        async with db.transaction(readonly=True) as session:
            order = await session.get(Order, order_id)
            if order is None:
                raise NotFound(f"no order {order_id}")
            if order.status in FINAL:
                return order, await get_outputs(session, order_id)
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        await asyncio.sleep(min(interval, left))
