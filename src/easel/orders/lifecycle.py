"""Terminal and retry transitions. Each runs inside the caller's transaction."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from easel import metrics
from easel.accounts import ledger
from easel.accounts.accounts import release_running_slot
from easel.catalog.pricing import image_price
from easel.db.status import OrderStatus
from easel.db.tables import ORDERS, OUTPUTS, Order, Output
from easel.errors import Conflict, NotFound
from easel.webhooks import outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewOutput:
    index: int
    storage_key: str
    content_type: str
    seed: int
    width: int
    height: int
    bytes: int
    nsfw_score: float | None = None
    safety: str | None = None  # Output.safety
    original_key: str | None = None  # a blurred output's held original


# Outputs a client sees: not checked or passed, flagged, blurred, or released by an operator
# (never one the safety check blocked, nor one whose block the operator confirmed).
SHOWN_SAFETY = ("flagged", "blurred", "released")


def shown() -> ColumnElement[bool]:
    return or_(Output.safety.is_(None), Output.safety.in_(SHOWN_SAFETY))


def output_price(order: Order, index: int) -> int:
    """Output `index`'s share of what the order's images cost (its enhancement left out): what
    a blocked output gives back and a released one is charged."""
    return image_price(order.cost_credits - order.enhance_credits, order.n, index)


async def get_outputs(session: AsyncSession, order_id: str) -> list[Output]:
    rows = await session.scalars(
        select(Output).where(Output.order_id == order_id, shown()).order_by(Output.index)
    )
    return list(rows)


async def _finish(
    session: AsyncSession,
    order_id: str,
    worker_id: str | None,
    now: datetime,
    values: dict[str, object],
) -> Order | None:
    """Move a running (worker_id given) or pending order to a final state, once."""
    return (await _finish_many(session, [order_id], worker_id, now, values)).get(order_id)


async def _finish_many(
    session: AsyncSession,
    order_ids: Sequence[str],
    worker_id: str | None,
    now: datetime,
    values: dict[str, object],
) -> dict[str, Order]:
    """`_finish` for several orders in one statement: those it moved, by id."""
    where: list[ColumnElement[bool]] = [ORDERS.c.id.in_(list(order_ids))]
    if worker_id is not None:
        where += [ORDERS.c.status == OrderStatus.RUNNING, ORDERS.c.worker_id == worker_id]
    else:
        where += [ORDERS.c.status.in_((OrderStatus.PENDING, OrderStatus.RUNNING))]
    # The rows come back as they are now, in the same statement (no read after the write); a
    # Core UPDATE read into orders skips the ORM's bulk-update bookkeeping.
    changed = (
        update(ORDERS)
        .where(*where)
        .values(completed_at=now, lease_until=None, **values)
        .returning(*ORDERS.c)
    )
    found = await session.scalars(
        select(Order).from_statement(changed), execution_options={"populate_existing": True}
    )
    return {order.id: order for order in found}


async def record_enhancement(
    session: AsyncSession,
    order_id: str,
    worker_id: str,
    status: str,
    prompt: str | None,
    negative_prompt: str | None,
    note: str | None,
) -> None:
    """What the enhancer did for a running order this worker holds (nothing once it lost it)."""
    await session.execute(
        update(Order)
        .where(
            Order.id == order_id,
            Order.status == OrderStatus.RUNNING,
            Order.worker_id == worker_id,
        )
        .values(
            enhance_status=status,
            enhanced_prompt=prompt,
            enhanced_negative_prompt=negative_prompt,
            enhance_note=note,
        )
    )


def started(session: AsyncSession, order: Order, now: datetime) -> None:
    """In the claim's transaction: a callback for clients that asked for every status change."""
    if order.webhook_on_start:
        outbox.enqueue(session, order, outbox.STARTED, now)


@dataclass(frozen=True)
class Completion:
    """One order's outputs, to complete it with (`complete_many`). `refund`: credits given back
    for outputs the safety check blocked."""

    order_id: str
    outputs: list[NewOutput]
    refund: int = 0


async def complete(
    session: AsyncSession,
    order_id: str,
    worker_id: str | None,
    outputs: list[NewOutput],
    now: datetime,
    *,
    refund: int = 0,
) -> Order | None:
    """None when the worker no longer holds the order (lease lost); nothing is written then.
    `refund`: credits given back for outputs the safety check blocked (once per order)."""
    [done] = await complete_many(session, worker_id, [Completion(order_id, outputs, refund)], now)
    return done


async def complete_many(
    session: AsyncSession, worker_id: str | None, items: Sequence[Completion], now: datetime
) -> list[Order | None]:
    """`complete` for several orders in a few statements (one UPDATE of the orders, one INSERT
    of their outputs, one UPDATE per account); each one's order, or None (lease lost)."""
    done = await _finish_many(
        session,
        [i.order_id for i in items],
        worker_id,
        now,
        {"status": OrderStatus.COMPLETED, "progress": 100},
    )
    results: list[Order | None] = []
    finished: list[tuple[Completion, Order]] = []
    for item in items:
        order = done.pop(item.order_id, None)  # an order given twice is completed once
        results.append(order)
        if order is not None:
            finished.append((item, order))
    # one INSERT of plain rows: no ORM objects to track
    rows = [
        {"order_id": i.order_id, "created_at": now, **vars(o)}
        for i, _ in finished
        for o in i.outputs
    ]
    if rows:
        await session.execute(insert(OUTPUTS), rows)
    # accounts in one order, so that two transactions never wait on each other's
    for account_id, count in sorted(Counter(o.account_id for _, o in finished).items()):
        await release_running_slot(session, account_id, count)
    for item, _ in finished:
        if item.refund > 0:
            await ledger.refund_part(
                session, item.order_id, item.refund, now, "outputs blocked: content_policy"
            )
    await session.flush()
    for _, order in finished:
        outbox.enqueue(session, order, outbox.event_for(order.status), now)
        metrics.order_finished(session, order.status, order.model)
    return results


async def fail(
    session: AsyncSession,
    order_id: str,
    worker_id: str | None,
    code: str,
    message: str,
    now: datetime,
    *,
    status: str = OrderStatus.FAILED,
    held: Sequence[NewOutput] = (),
) -> Order | None:
    """Fail (or cancel) and refund exactly once. `worker_id` None: any pending/running order.
    `held`: outputs the safety check blocked, recorded for review (never shown to the client)."""
    before = await session.get(Order, order_id, with_for_update=True, populate_existing=True)
    was_running = before is not None and before.status == OrderStatus.RUNNING
    order = await _finish(
        session,
        order_id,
        worker_id,
        now,
        {"status": status, "error_code": code, "error_message": message[:4000]},
    )
    if order is None:
        return None
    refunded = await ledger.refund(session, order_id, now, f"{status}: {code}")
    if held:
        session.add_all(Output(order_id=order_id, created_at=now, **vars(o)) for o in held)
    if was_running:
        await release_running_slot(session, order.account_id)
    log.info(
        "order ended without output",
        extra={"action": status, "order_id": order_id, "code": code, "refunded": refunded},
    )
    outbox.enqueue(session, order, outbox.event_for(order.status), now)
    metrics.order_finished(session, order.status, order.model, code, refunded)
    return order


async def cancel(session: AsyncSession, account_id: str, order_id: str, now: datetime) -> Order:
    """Pending: canceled and refunded now. Running: flagged; the worker stops at its next step.
    The row is read locked and as it is now, even when this session read it before."""
    order = await session.scalar(
        select(Order)
        .where(Order.id == order_id, Order.account_id == account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if order is None:
        raise NotFound(f"no order {order_id}")
    if order.status == OrderStatus.PENDING:
        done = await fail(
            session,
            order_id,
            None,
            "canceled",
            "canceled by the client",
            now,
            status=OrderStatus.CANCELED,
        )
        assert done is not None
        return done
    if order.status == OrderStatus.RUNNING:
        order.cancel_requested = True
        await session.flush()
        return order
    raise Conflict(f"order {order_id} is already {order.status} and cannot be canceled")


async def requeue_or_fail(
    session: AsyncSession, order: Order, max_attempts: int, now: datetime
) -> str:
    """A running order whose lease expired: back to pending, or failed after the last attempt."""
    if order.cancel_requested:
        await fail(
            session,
            order.id,
            order.worker_id,
            "canceled",
            "canceled by the client",
            now,
            status=OrderStatus.CANCELED,
        )
        return "canceled"
    if order.attempts >= max_attempts:
        await fail(
            session,
            order.id,
            order.worker_id,
            "worker_lost",
            f"the worker running this order stopped responding {order.attempts} times; "
            "the order was refunded",
            now,
        )
        return "failed"
    result = await session.execute(
        update(Order)
        .where(
            Order.id == order.id,
            Order.status == OrderStatus.RUNNING,
            Order.worker_id == order.worker_id,
        )
        .values(status=OrderStatus.PENDING, worker_id=None, lease_until=None, progress=0, step=0)
        .returning(Order.id)
    )
    if result.first() is not None:
        await release_running_slot(session, order.account_id)
    return "requeued"
