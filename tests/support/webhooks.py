"""Webhook test helpers: due outbox rows to a loopback endpoint, and the sender service running
in the test's process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from sqlalchemy import select

from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.status import OrderStatus
from easel.db.tables import Account, Order, WebhookDelivery
from easel.orders import lifecycle
from easel.services.webhook_sender import WebhookSender
from easel.webhooks import outbox
from tests.support.orders import submit_order

COMPLETED = outbox.event_for(OrderStatus.COMPLETED)


async def due_deliveries(state: AppState, account: Account, url: str, count: int) -> list[str]:
    """`count` outbox rows to `url`, created one microsecond apart: an order's events as
    lifecycle writes them (the last one its real cancel); their ids (webhook-ids) oldest
    first."""
    order_id = await submit_order(state, account, webhook_url=url)
    base = utcnow()
    async with state.db.transaction() as session:
        order = await session.get(Order, order_id)
        assert order is not None
        for i in range(count - 1):
            outbox.enqueue(session, order, COMPLETED, base + timedelta(microseconds=i))
        await lifecycle.cancel(session, account.id, order_id, base + timedelta(milliseconds=1))
    async with state.db.transaction(readonly=True) as session:
        ids = await session.scalars(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.order_id == order_id)
            .order_by(WebhookDelivery.created_at)
        )
        return list(ids)


@asynccontextmanager
async def sending(
    state: AppState, settings: Settings, clock: Callable[[], datetime] = utcnow
) -> AsyncIterator[None]:
    """The sender service running in this process until the block ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(WebhookSender(settings, state.db, state.storage, clock).run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
