"""The operator's review of outputs the safety check flagged or blocked: the list, "release"
(shown to the client; a blocked one is stored where clients see it and charged) and "confirm"
(a blocked one's held file is deleted; a flagged one is hidden from the client)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from easel.accounts import ledger
from easel.db.status import OrderStatus
from easel.db.tables import Order, Output
from easel.errors import Conflict, NotFound
from easel.webhooks import outbox

TO_REVIEW = ("flagged", "blocked")
RELEASED, CONFIRMED = "released", "confirmed"


async def to_review(
    session: AsyncSession, limit: int, after: int = 0
) -> list[tuple[Output, Order]]:
    """Flagged and blocked outputs not yet reviewed, oldest first, ids above `after`."""
    rows = await session.execute(
        select(Output, Order)
        .join(Order, Order.id == Output.order_id)
        .where(Output.safety.in_(TO_REVIEW), Output.id > after)
        .order_by(Output.id)
        .limit(limit)
    )
    return [(output, order) for output, order in rows.all()]


async def reviewed(
    session: AsyncSession, output_id: int, lock: bool = True
) -> tuple[Output, Order]:
    """The output under review and its order (locked, unless `lock` is false)."""
    output = await session.get(Output, output_id, with_for_update=lock)
    if output is None:
        raise NotFound(f"no output {output_id}")
    if output.safety not in TO_REVIEW:
        raise Conflict(
            f"output {output_id} is not waiting for review (it is {output.safety or 'passed'})"
        )
    order = await session.get(Order, output.order_id, with_for_update=lock)
    assert order is not None
    return output, order


def shown_key(output: Output) -> str:
    """Where a released output goes: out of `held/`."""
    return output.storage_key.replace("/held/", "/", 1)


async def release(session: AsyncSession, output: Output, order: Order, now: datetime) -> int:
    """Mark it released; a blocked one (its file already copied to `shown_key`) is charged one
    image's price, and an order that failed because every output was blocked completes.
    Returns the credits charged."""
    charged = 0
    if output.safety == "blocked":
        charged = order.cost_credits // max(order.n, 1)
        if charged:
            await ledger.debit(
                session,
                order.account_id,
                None,
                charged,
                now,
                note=f"output {order.id}/{output.index} released after review",
            )
        output.storage_key = shown_key(output)
        if order.status == OrderStatus.FAILED and order.error_code == "content_policy":
            order.status = OrderStatus.COMPLETED
            order.error_code = order.error_message = None
            outbox.enqueue(session, order, outbox.event_for(order.status), now)
    output.safety = RELEASED
    await session.flush()
    return charged


async def confirm(session: AsyncSession, output: Output) -> str | None:
    """Mark it confirmed (hidden from the client for good); the held file to delete, if any."""
    held = output.storage_key if output.safety == "blocked" else None
    output.safety = CONFIRMED
    await session.flush()
    return held
