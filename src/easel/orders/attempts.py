"""Attempt rows: each try of an order on an upstream channel, and the hand-over of an order to
its local channel's model. The caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from easel.accounts.accounts import release_running_slot
from easel.clock import iso
from easel.db.status import FINAL, OrderStatus
from easel.db.tables import ATTEMPTS, Order, OrderAttempt
from easel.ids import new_id
from easel.orders.queue import notify_new_order

# Attempts still waiting on the provider (counted as in flight).
OPEN_STATES = ("submitting", "accepted")


async def history(session: AsyncSession, order_id: str) -> list[OrderAttempt]:
    rows = await session.scalars(
        select(OrderAttempt).where(OrderAttempt.order_id == order_id).order_by(OrderAttempt.number)
    )
    return list(rows)


@dataclass(frozen=True)
class NewAttempt:
    """A `submitting` attempt row to write (`begin_many`)."""

    order_id: str
    number: int
    model: str
    channel: str
    provider: str
    images: int
    worker_id: str
    created_at: datetime


async def begin_many(session: AsyncSession, rows: Sequence[NewAttempt]) -> list[str]:
    """`submitting` attempt rows in one INSERT (no ORM objects); their ids, in order."""
    ids = [new_id("att") for _ in rows]
    values = [
        vars(row)
        | {
            "id": attempt_id,
            "state": "submitting",
            "handle": {},
            "remote_status": "",
            "cost": 0.0,
            "outputs": [],
        }
        for attempt_id, row in zip(ids, rows, strict=True)
    ]
    if values:
        await session.execute(insert(ATTEMPTS), values)
    return ids


async def discard(session: AsyncSession, attempt_ids: Sequence[str]) -> None:
    """Delete tries whose rows were written ahead and that were never sent (`submitting`)."""
    if attempt_ids:
        await session.execute(
            delete(ATTEMPTS).where(
                ATTEMPTS.c.id.in_(list(attempt_ids)), ATTEMPTS.c.state == "submitting"
            )
        )


async def accepted(
    session: AsyncSession, attempt_id: str, remote_id: str, handle: dict[str, Any], now: datetime
) -> bool:
    """The provider took the try's job. False when the row no longer says `submitting`: the
    order's next holder found it cut off and left the channel (the job is nobody's)."""
    result = await session.execute(
        update(ATTEMPTS)
        .where(ATTEMPTS.c.id == attempt_id, ATTEMPTS.c.state == "submitting")
        .values(state="accepted", remote_id=remote_id[:256], handle=handle, accepted_at=now)
        .returning(ATTEMPTS.c.id)
    )
    return result.first() is not None


async def progress(
    session: AsyncSession, attempt_id: str, remote_status: str, queue_position: int | None
) -> None:
    await session.execute(
        update(OrderAttempt)
        .where(OrderAttempt.id == attempt_id)
        .values(remote_status=remote_status[:64], queue_position=queue_position)
    )


async def orphaned(
    session: AsyncSession,
    model: str,
    channels: Sequence[str],
    since: datetime,
    ended_before: datetime,
    limit: int,
) -> list[OrderAttempt]:
    """Jobs a provider accepted whose order ended without them: `accepted` rows of `model`'s
    `channels` begun since `since` (ix_order_attempts_channel_created) whose order ended before
    `ended_before` (any worker still following one has seen its order end by then)."""
    rows = await session.scalars(
        select(OrderAttempt)
        .join(Order, Order.id == OrderAttempt.order_id)
        .where(
            OrderAttempt.model == model,
            OrderAttempt.channel.in_(list(channels)),
            OrderAttempt.created_at >= since,
            OrderAttempt.state == "accepted",
            Order.status.in_(FINAL),
            Order.completed_at < ended_before,
        )
        .order_by(OrderAttempt.created_at)
        .limit(limit)
    )
    return list(rows)


async def abandon(session: AsyncSession, row: OrderAttempt, error: str, now: datetime) -> bool:
    """An orphaned job's row `canceled`, once: False when another worker took it first."""
    result = await session.execute(
        update(ATTEMPTS)
        .where(ATTEMPTS.c.id == row.id, ATTEMPTS.c.state == "accepted")
        .values(
            state="canceled",
            error=error,
            finished_at=now,
            latency_ms=int((now - row.created_at).total_seconds() * 1000),
        )
        .returning(ATTEMPTS.c.id)
    )
    return result.first() is not None


@dataclass(frozen=True)
class AttemptEnd:
    """An attempt's finish, to be written in a caller's transaction (`finish_many`).
    `created_at`: the row's, when the caller knows it (else it is read). `remote`: (remote id,
    handle, accepted at) of an acceptance written only now (a synchronous provider's answer)."""

    attempt_id: str
    state: str
    at: datetime
    created_at: datetime | None = None
    cost: float = 0.0
    error: str | None = None
    retry_after: float | None = None
    outputs: list[str] = field(default_factory=list)
    remote: tuple[str, dict[str, Any], datetime] | None = None

    async def write(self, session: AsyncSession) -> None:
        await finish_many(session, [self])


# One UPDATE run for many rows (executemany): the attempt's id is bound as `attempt_id`.
FINISH = update(ATTEMPTS).where(ATTEMPTS.c.id == bindparam("attempt_id"))


async def finish_many(session: AsyncSession, ends: Sequence[AttemptEnd]) -> None:
    """End several attempts: one UPDATE run over their rows (two when only some carry their
    acceptance), after one read of the created_at their callers did not know."""
    unknown = [e.attempt_id for e in ends if e.created_at is None]
    created: dict[str, datetime] = {}
    if unknown:
        rows = await session.execute(
            select(OrderAttempt.id, OrderAttempt.created_at).where(OrderAttempt.id.in_(unknown))
        )
        created = {attempt_id: at for attempt_id, at in rows.all()}
    plain: list[dict[str, Any]] = []
    accepted: list[dict[str, Any]] = []
    for end in ends:
        created_at = end.created_at or created.get(end.attempt_id)
        if created_at is None:
            continue  # no such attempt
        values: dict[str, Any] = {
            "attempt_id": end.attempt_id,
            "state": end.state,
            "cost": end.cost,
            "error": end.error,
            "retry_after": end.retry_after,
            "outputs": list(end.outputs),
            "finished_at": end.at,
            "latency_ms": int((end.at - created_at).total_seconds() * 1000),
        }
        if end.remote is None:
            plain.append(values)
        else:
            remote_id, handle, accepted_at = end.remote
            accepted.append(
                values
                | {"remote_id": remote_id[:256], "handle": handle, "accepted_at": accepted_at}
            )
    for rows_ in (plain, accepted):
        if rows_:
            await session.execute(FINISH, rows_)


async def hand_off(session: AsyncSession, order_id: str, worker_id: str, model_id: str) -> bool:
    """Put a running order back in the queue as catalog model `model_id` (its upstream model's
    local channel); False when this worker no longer holds it."""
    result = await session.execute(
        update(Order)
        .where(
            Order.id == order_id,
            Order.worker_id == worker_id,
            Order.status == OrderStatus.RUNNING,
        )
        .values(
            model=model_id,
            status=OrderStatus.PENDING,
            worker_id=None,
            lease_until=None,
            progress=0,
            step=0,
        )
        .returning(Order.account_id)
    )
    row = result.first()
    if row is None:
        return False
    await release_running_slot(session, row.account_id)
    await notify_new_order(session)
    return True


async def since(session: AsyncSession, start: datetime) -> list[OrderAttempt]:
    """Every attempt created at or after `start` (the admin channel report)."""
    rows = await session.scalars(
        select(OrderAttempt)
        .where(OrderAttempt.created_at >= start)
        .order_by(OrderAttempt.created_at)
    )
    return list(rows)


async def for_orders(session: AsyncSession, order_ids: list[str]) -> dict[str, list[OrderAttempt]]:
    found: dict[str, list[OrderAttempt]] = {i: [] for i in order_ids}
    if not order_ids:
        return found
    rows = await session.scalars(
        select(OrderAttempt)
        .where(OrderAttempt.order_id.in_(order_ids))
        .order_by(OrderAttempt.order_id, OrderAttempt.number)
    )
    for row in rows:
        found[row.order_id].append(row)
    return found


def describe_route(rows: list[OrderAttempt], *, full: bool) -> dict[str, Any] | None:
    """The route an order took, for a status body: the channel and provider of its last attempt
    and every attempt in order; None when it has none (not an upstream order, or not tried yet).
    `full` (the operator's view) adds the provider's ids, status, costs, latencies and errors;
    without it (a client's, with EASEL_EXPOSE_ROUTE) only channel, provider and state."""
    if not rows:
        return None
    tries = []
    for row in sorted(rows, key=lambda r: r.number):
        entry: dict[str, Any] = {
            "number": row.number,
            "channel": row.channel,
            "provider": row.provider,
            "state": row.state,
        }
        if full:
            entry |= {
                "remote_id": row.remote_id,
                "remote_status": row.remote_status,
                "queue_position": row.queue_position,
                "cost": row.cost,
                "latency_ms": row.latency_ms,
                "retry_after": row.retry_after,
                "error": row.error,
                "outputs": list(row.outputs or []),
                "worker_id": row.worker_id,
                "created_at": iso(row.created_at),
                "finished_at": iso(row.finished_at),
            }
        tries.append(entry)
    route: dict[str, Any] = {
        "channel": tries[-1]["channel"],
        "provider": tries[-1]["provider"],
        "attempts": tries,
    }
    if full:
        route["cost"] = sum(row.cost for row in rows)
    return route
