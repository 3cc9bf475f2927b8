"""Reading an account's orders: one by id, a page of them newest first, one by the client's id.

Reads only; they take the caller's session and write nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import false, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from easel.db.status import OrderStatus
from easel.db.tables import Order, Output
from easel.errors import NotFound
from easel.orders import lifecycle


@dataclass(frozen=True)
class OrderPage:
    """Up to `limit` orders, newest first, each with its outputs (none unless completed)."""

    orders: list[tuple[Order, list[Output]]]
    next_before: str | None  # pass it as `before` for the next page; None: this is the last


async def list_orders(
    session: AsyncSession,
    account_id: str,
    *,
    limit: int,
    before: str | None = None,
    status: str | None = None,
    model: str | None = None,
    dialect: str | None = None,
    since: datetime | None = None,
    unless_flagged: str | None = None,
    outputs: bool = True,
) -> OrderPage:
    """The account's orders older than order `before` (keyset: created_at, then id), optionally
    of one status, style/model name, dialect, or made since a moment, and without the ones whose
    dialect data sets `unless_flagged` true (filtered in the query, so a page is never short).
    `outputs=False`: no outputs read. NotFound when `before` is not one of the account's
    orders."""
    query = select(Order).where(Order.account_id == account_id)
    if status:
        query = query.where(Order.status == status)
    if model:
        query = query.where((Order.model_alias == model) | (Order.model == model))
    if dialect:
        query = query.where(Order.dialect == dialect)
    if since:
        query = query.where(Order.created_at >= since)
    if unless_flagged:
        flag = Order.dialect_data[unless_flagged].as_boolean()
        query = query.where(func.coalesce(flag, false()).is_(false()))
    if before:
        anchor = await own_order(session, account_id, before)
        query = query.where(
            (Order.created_at < anchor.created_at)
            | ((Order.created_at == anchor.created_at) & (Order.id < anchor.id))
        )
    rows = list(
        await session.scalars(
            query.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit + 1)
        )
    )
    page = rows[:limit]
    orders = []
    for order in page:
        done = outputs and order.status == OrderStatus.COMPLETED
        orders.append((order, await lifecycle.get_outputs(session, order.id) if done else []))
    return OrderPage(orders=orders, next_before=page[-1].id if len(rows) > limit else None)


async def own_order(
    session: AsyncSession, account_id: str, order_id: str, dialect: str | None = None
) -> Order:
    """The caller's order; another account's, or one made through another dialect, is not found."""
    query = select(Order).where(Order.id == order_id, Order.account_id == account_id)
    if dialect is not None:
        query = query.where(Order.dialect == dialect)
    order = await session.scalar(query)
    if order is None:
        raise NotFound(f"no {'task' if dialect else 'order'} {order_id} in this account")
    return order


async def with_outputs(session: AsyncSession, order: Order) -> tuple[Order, list[Output]]:
    """The order and its outputs (by index; only a completed order has any)."""
    if order.status != OrderStatus.COMPLETED:
        return order, []
    return order, await lifecycle.get_outputs(session, order.id)


async def find_by_external_id(
    session: AsyncSession, account_id: str, dialect: str, external_task_id: str
) -> Order:
    """The account's order that the client named `external_task_id` through `dialect`."""
    order = await session.scalar(
        select(Order).where(
            Order.account_id == account_id,
            Order.dialect == dialect,
            Order.external_task_id == external_task_id,
        )
    )
    if order is None:
        raise NotFound(f"no task with external_task_id {external_task_id!r} in this account")
    return order
