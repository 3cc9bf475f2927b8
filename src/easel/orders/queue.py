"""The queue is the `orders` table. Claim, lease renewal and reaping are named statements here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from easel.db.engine import NOTIFY_CHANNEL, is_postgresql
from easel.db.tables import Order, UTCDateTime

log = logging.getLogger(__name__)

# Highest priority first, then oldest, among accounts under their running cap. PostgreSQL: order
# rows another claimer holds are skipped; the account row is only taken by the `slot` UPDATE,
# which waits for it and re-checks the cap on its newest version, so concurrent claimers keep the
# cap, and a claim holds at most one account lock (no lock-order deadlocks). When the cap filled
# up between the snapshot and the slot, `candidate_id` comes back without `claimed_id`: try again.
CLAIM_NEXT_POSTGRESQL = text(
    """
    WITH candidate AS (
        SELECT o.id, o.account_id
        FROM orders AS o JOIN accounts AS a ON a.id = o.account_id
        WHERE o.status = 'pending' AND a.running_count < a.max_running
        ORDER BY o.priority DESC, o.created_at ASC, o.id ASC
        LIMIT 1
        FOR UPDATE OF o SKIP LOCKED
    ), slot AS (
        UPDATE accounts SET running_count = accounts.running_count + 1
        FROM candidate
        WHERE accounts.id = candidate.account_id
          AND accounts.running_count < accounts.max_running
        RETURNING accounts.id
    ), claimed AS (
        UPDATE orders
        SET status = 'running', worker_id = :worker_id, lease_until = :lease_until,
            started_at = COALESCE(orders.started_at, :now), attempts = orders.attempts + 1
        FROM candidate, slot
        WHERE orders.id = candidate.id
        RETURNING orders.id
    )
    SELECT candidate.id AS candidate_id, claimed.id AS claimed_id
    FROM candidate LEFT JOIN claimed ON true
    """
).bindparams(bindparam("lease_until", type_=UTCDateTime), bindparam("now", type_=UTCDateTime))

# SQLite: the transaction began with BEGIN IMMEDIATE, so this pair runs alone.
CLAIM_NEXT_SQLITE = text(
    """
    UPDATE orders
    SET status = 'running', worker_id = :worker_id, lease_until = :lease_until,
        started_at = COALESCE(started_at, :now), attempts = attempts + 1
    WHERE id = (
        SELECT o.id FROM orders AS o JOIN accounts AS a ON a.id = o.account_id
        WHERE o.status = 'pending' AND a.running_count < a.max_running
        ORDER BY o.priority DESC, o.created_at ASC, o.id ASC
        LIMIT 1
    )
    RETURNING id, account_id
    """
).bindparams(bindparam("lease_until", type_=UTCDateTime), bindparam("now", type_=UTCDateTime))
TAKE_SLOT_SQLITE = text(
    "UPDATE accounts SET running_count = running_count + 1 WHERE id = :account_id"
)
CLAIM_RACE_RETRIES = 5


async def claim_next(
    session: AsyncSession, worker_id: str, now: datetime, lease: timedelta
) -> Order | None:
    params = {"worker_id": worker_id, "lease_until": now + lease, "now": now}
    order_id = None
    if is_postgresql(session):
        for _ in range(CLAIM_RACE_RETRIES):
            row = (await session.execute(CLAIM_NEXT_POSTGRESQL, params)).first()
            if row is None or row.claimed_id is not None:
                order_id = None if row is None else row.claimed_id
                break
    else:
        row = (await session.execute(CLAIM_NEXT_SQLITE, params)).first()
        if row is not None:
            order_id = row.id
            await session.execute(TAKE_SLOT_SQLITE, {"account_id": row.account_id})
    if order_id is None:
        return None
    return await session.get(Order, order_id, populate_existing=True)


async def renew_lease(
    session: AsyncSession,
    order_id: str,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    **progress: Any,
) -> bool | None:
    """Extend the lease (and record progress). None: the lease is lost; else cancel_requested."""
    result = await session.execute(
        update(Order)
        .where(Order.id == order_id, Order.worker_id == worker_id, Order.status == "running")
        .values(lease_until=now + lease, **progress)
        .returning(Order.cancel_requested)
    )
    row = result.first()
    return None if row is None else bool(row[0])


async def expired_leases(session: AsyncSession, now: datetime, limit: int = 100) -> list[Order]:
    query = (
        select(Order)
        .where(Order.status == "running", Order.lease_until < now)
        .order_by(Order.lease_until)
        .limit(limit)
    )
    if is_postgresql(session):
        query = query.with_for_update(skip_locked=True)
    return list(await session.scalars(query))


async def queue_position(session: AsyncSession, order: Order) -> int:
    """1 for the next order to run."""
    ahead = await session.scalar(
        select(func.count())
        .select_from(Order)
        .where(
            Order.status == "pending",
            or_(
                Order.priority > order.priority,
                and_(Order.priority == order.priority, Order.created_at < order.created_at),
            ),
        )
    )
    return int(ahead or 0) + 1


async def notify_new_order(session: AsyncSession) -> None:
    """Wake idle PostgreSQL workers when this transaction commits."""
    if is_postgresql(session):
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})


async def listen_for_orders(dsn: str, wake: Callable[[], None], stop: asyncio.Event) -> None:
    """Hold a LISTEN connection until `stop`; call `wake` on each notification."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.add_listener(NOTIFY_CHANNEL, lambda *_: wake())
        await stop.wait()
    finally:
        await conn.close()
