"""What the queue and the webhook outbox hold right now, for /metrics: two aggregate reads.

Each is one statement over an index the claim or the sender already walks (the queue index's
leading `status`, the outbox's `state, next_attempt_at`), so a scrape costs one pass over the
orders waiting or running, not over the order history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from easel.db.status import OrderStatus
from easel.db.tables import Order, WebhookDelivery


@dataclass(frozen=True)
class QueueGroup:
    """Orders of one status, priority and model; `oldest`: the earliest created."""

    status: str
    priority: int
    model: str
    orders: int
    oldest: datetime


@dataclass(frozen=True)
class Outbox:
    pending: int  # not delivered yet and not given up
    due: int  # of those, due for an attempt now


QUEUE_BY_PRIORITY_AND_MODEL = (
    select(
        Order.status,
        Order.priority,
        Order.model,
        func.count().label("orders"),
        func.min(Order.created_at).label("oldest"),
    )
    .where(Order.status.in_((OrderStatus.PENDING, OrderStatus.RUNNING)))
    .group_by(Order.status, Order.priority, Order.model)
)


async def queue_groups(session: AsyncSession) -> list[QueueGroup]:
    """Pending and running orders, counted by status, priority and model."""
    rows = await session.execute(QUEUE_BY_PRIORITY_AND_MODEL)
    return [
        QueueGroup(
            status=r.status, priority=r.priority, model=r.model, orders=r.orders, oldest=r.oldest
        )
        for r in rows
    ]


async def outbox(session: AsyncSession, now: datetime) -> Outbox:
    pending = WebhookDelivery.state == "pending"
    due = case((WebhookDelivery.next_attempt_at <= now, 1), else_=0)
    row = (
        await session.execute(select(func.count(), func.coalesce(func.sum(due), 0)).where(pending))
    ).one()
    return Outbox(pending=int(row[0]), due=int(row[1]))


async def open_orders(session: AsyncSession, limit: int) -> tuple[list[Order], list[Order]]:
    """Up to `limit` pending orders in claim order (priority, then oldest) and up to `limit`
    running ones by worker: the operator's view of the queue."""
    pending = await session.scalars(
        select(Order)
        .where(Order.status == OrderStatus.PENDING)
        .order_by(Order.priority.desc(), Order.fair_seq, Order.created_at)
        .limit(limit)
    )
    running = await session.scalars(
        select(Order)
        .where(Order.status == OrderStatus.RUNNING)
        .order_by(Order.worker_id, Order.started_at)
        .limit(limit)
    )
    return list(pending), list(running)
