"""Deliver due outbox rows: POST JSON, retry with exponential backoff, give up after the limit."""

from __future__ import annotations

import logging
from datetime import timedelta

import httpx
from sqlalchemy import select

from easel.clock import utcnow
from easel.config import Settings
from easel.db.engine import Database
from easel.db.tables import WebhookDelivery

log = logging.getLogger(__name__)


async def deliver_due(
    db: Database, client: httpx.AsyncClient, settings: Settings, limit: int = 20
) -> int:
    """Attempt every due delivery once; return how many were attempted."""
    async with db.transaction() as session:
        query = (
            select(WebhookDelivery)
            .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= utcnow())
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        )
        if not db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        due = list(await session.scalars(query))
        # Claim them for a while so another sender does not send them at the same time.
        for row in due:
            row.next_attempt_at = utcnow() + timedelta(seconds=settings.webhook_timeout * 3)
    for row in due:
        status: int | None = None
        error: str | None = None
        try:
            response = await client.post(
                row.url,
                json=row.payload,
                headers={"webhook-id": row.id, "user-agent": "easel-webhooks"},
                timeout=settings.webhook_timeout,
            )
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        async with db.transaction() as session:
            fresh = await session.get(WebhookDelivery, row.id, with_for_update=True)
            if fresh is None:
                continue
            fresh.attempts += 1
            fresh.last_status = status
            fresh.last_error = error
            if error is None:
                fresh.state = "delivered"
                fresh.delivered_at = utcnow()
            elif fresh.attempts >= settings.webhook_max_attempts:
                fresh.state = "failed"
            else:
                delay = settings.webhook_backoff**fresh.attempts
                fresh.next_attempt_at = utcnow() + timedelta(seconds=delay)
        log.info(
            "webhook attempt",
            extra={"action": "webhook", "order_id": row.order_id, "status": status, "error": error},
        )
    return len(due)
