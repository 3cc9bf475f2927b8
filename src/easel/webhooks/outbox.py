"""Webhook outbox rows, written in the transaction of the status change they report.

A row holds the canonical event (order, event kind); the body is rendered by the order's dialect
when it is sent, so the output URLs in it are fresh at every attempt. Its endpoint (and the
endpoint's row, the first time) is set when the row is flushed (webhooks/endpoints.py).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from easel.db.status import OrderStatus
from easel.db.tables import Order, WebhookDelivery
from easel.ids import new_id
from easel.webhooks import endpoints as _endpoints  # noqa: F401  routes new rows at flush

STARTED = "order.started"


def event_for(status: str) -> str:
    """The event kind that reports an order reaching `status`."""
    return STARTED if status == OrderStatus.RUNNING else f"order.{status}"


def status_of(event: str) -> OrderStatus:
    """The status an event reports (the order may have moved on since)."""
    return OrderStatus.RUNNING if event == STARTED else OrderStatus(event.removeprefix("order."))


def enqueue(session: AsyncSession, order: Order, event: str, now: datetime) -> None:
    if not order.webhook_url:
        return
    session.add(
        WebhookDelivery(
            id=new_id("msg", 24),
            account_id=order.account_id,
            order_id=order.id,
            url=order.webhook_url,
            event=event,
            state="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
