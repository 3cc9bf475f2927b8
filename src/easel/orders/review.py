"""The operator's review of outputs the safety check flagged, blurred or blocked: the list,
"release" (shown to the client; a blocked one is stored where clients see it and charged, a blurred
one's held original replaces its blurred copy) and "confirm" (hidden from the client; a held file
is deleted)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from easel.accounts import ledger
from easel.accounts.accounts import lock_account
from easel.catalog import Catalog
from easel.db.status import OrderStatus
from easel.db.tables import Order, Output
from easel.errors import Conflict, NotFound, QuotaExceeded
from easel.orders import lifecycle
from easel.webhooks import outbox

TO_REVIEW = ("flagged", "blurred", "blocked")
RELEASED, CONFIRMED = "released", "confirmed"


async def to_review(
    session: AsyncSession, limit: int, after: int = 0
) -> list[tuple[Output, Order]]:
    """Flagged and blocked outputs not yet reviewed, oldest first, ids above `after`."""
    rows = await session.execute(
        select(Output, Order)
        .join(Order, Order.id == Output.order_id)
        .where(Output.safety.in_(TO_REVIEW), Output.id > after, Order.outputs_swept.is_(False))
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
    if order.outputs_swept:
        raise Conflict(
            f"output {output_id}'s order {order.id} is past retention and its files are "
            "deleted; nothing is left to review"
        )
    return output, order


def shown_key(output: Output) -> str:
    """Where a released output goes: the order's folder, as an output that passed."""
    extension = output.storage_key.rsplit(".", 1)[-1]
    return f"{output.order_id}/{output.index}.{extension}"


def release_kind(output: Output) -> str:
    """The ledger kind of a released output's charge: one per output (unique with the order)."""
    return f"release_{output.index}"


async def charge_release(
    session: AsyncSession, catalog: Catalog, output: Output, order: Order, now: datetime
) -> int:
    """Charge a blocked output's release (the account locked first): its share of the order's
    price, as its refund was. Refused (402) before anything is charged or copied when the
    account cannot pay. Returns the credits charged."""
    charged = lifecycle.output_price(order, output.index)
    if output.safety != "blocked" or not charged:
        return 0
    account = await lock_account(session, order.account_id)
    plan = catalog.plans.get(account.plan)
    have = await ledger.balance_with_grant(session, account.id, plan, now)
    if charged > have.total:
        raise QuotaExceeded(
            f"releasing output {output.id} charges account {account.id} {charged} credits but "
            f"it has {have.total} left; grant it credits first (`easel accounts grant --account "
            f"{account.id} --credits {charged - have.total}`) or confirm the output instead"
        )
    await ledger.debit(
        session,
        account.id,
        order.id,
        charged,
        now,
        note=f"output {order.id}/{output.index} released after review",
        kind=release_kind(output),
    )
    return charged


async def release(session: AsyncSession, output: Output, order: Order, now: datetime) -> None:
    """Mark it released (a blocked one charged by `charge_release` and its file now at
    `shown_key`); an order that failed because every output was blocked completes."""
    if output.safety == "blocked":
        output.storage_key = shown_key(output)
        if order.status == OrderStatus.FAILED and order.error_code == "content_policy":
            order.status = OrderStatus.COMPLETED
            order.error_code = order.error_message = None
            outbox.enqueue(session, order, outbox.event_for(order.status), now)
    output.original_key = None  # a blurred one's original now replaces the blurred copy
    output.safety = RELEASED
    await session.flush()


async def confirm(session: AsyncSession, output: Output) -> str | None:
    """Mark it confirmed (hidden from the client for good); the held file to delete, if any (a
    blocked output's, or a blurred one's original)."""
    held = output.storage_key if output.safety == "blocked" else output.original_key
    output.original_key = None
    output.safety = CONFIRMED
    await session.flush()
    return held
