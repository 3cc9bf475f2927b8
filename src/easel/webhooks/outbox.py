"""Webhook outbox rows, written in the transaction of the status change they report."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from easel.db.tables import Order, WebhookDelivery
from easel.ids import new_id


def enqueue(
    session: AsyncSession, order: Order, event: str, payload: dict[str, Any], now: datetime
) -> None:
    if not order.webhook_url:
        return
    session.add(
        WebhookDelivery(
            id=new_id("msg", 24),
            account_id=order.account_id,
            order_id=order.id,
            url=order.webhook_url,
            event=event,
            payload=payload,
            state="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
