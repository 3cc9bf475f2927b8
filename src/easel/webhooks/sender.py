"""Deliver due outbox rows: signed POSTs to the checked address, retried with backoff.

At least once: a row is claimed for a while before it is sent, and a sender that dies mid-way
leaves it to be sent again later with the same `webhook-id`.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta

import httpx
from sqlalchemy import select

from easel.clock import utcnow
from easel.config import Settings
from easel.db.engine import Database
from easel.db.tables import Account, WebhookDelivery
from easel.webhooks import signing
from easel.webhooks.urls import send_checked

log = logging.getLogger(__name__)

USER_AGENT = "easel-webhooks/1"


def retry_delay(settings: Settings, attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt."""
    return settings.webhook_retry_first * settings.webhook_retry_factor ** (attempts - 1)


async def post_signed(
    client: httpx.AsyncClient, settings: Settings, url: str, body: bytes, headers: dict[str, str]
) -> int:
    """POST `body`, following redirects that pass the same address check. The final status."""
    response = await send_checked(
        client,
        "POST",
        url,
        "webhook_url",
        settings.url_policy,
        max_redirects=settings.webhook_max_redirects,
        headers=headers | {"user-agent": USER_AGENT},
        content=body,
    )
    await response.aclose()
    return response.status_code


async def deliver_due(
    db: Database, client: httpx.AsyncClient, settings: Settings, limit: int = 20
) -> int:
    """Attempt every due delivery once; return how many were attempted."""
    async with db.transaction() as session:
        query = (
            select(WebhookDelivery, Account.webhook_secret)
            .join(Account, Account.id == WebhookDelivery.account_id)
            .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= utcnow())
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        )
        if not db.is_sqlite:
            query = query.with_for_update(of=WebhookDelivery, skip_locked=True)
        due = [(row, secret) for row, secret in (await session.execute(query)).all()]
        hold = timedelta(seconds=settings.webhook_timeout * (settings.webhook_max_redirects + 2))
        for row, _ in due:
            row.next_attempt_at = utcnow() + hold
    for row, secret in due:
        body = json.dumps(row.payload, separators=(",", ":"), ensure_ascii=False).encode()
        headers = signing.headers(secret, row.id, int(time.time()), body)
        status: int | None = None
        error: str | None = None
        try:
            status = await post_signed(client, settings, row.url, body, headers)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except Exception as exc:  # any failure of one delivery must not stop the sender
            error = f"{type(exc).__name__}: {exc}"[:1000]
        await _record(db, settings, row.id, status, error)
        log.info(
            "webhook attempt",
            extra={"action": "webhook", "order_id": row.order_id, "status": status, "error": error},
        )
    return len(due)


async def _record(
    db: Database, settings: Settings, delivery_id: str, status: int | None, error: str | None
) -> None:
    async with db.transaction() as session:
        row = await session.get(WebhookDelivery, delivery_id, with_for_update=True)
        if row is None:
            return
        now = utcnow()
        row.attempts += 1
        row.last_status = status
        row.last_error = error
        row.last_attempt_at = now
        if error is None:
            row.state = "delivered"
            row.delivered_at = now
        elif row.attempts >= settings.webhook_max_attempts:
            row.state = "failed"
        else:
            row.next_attempt_at = now + timedelta(seconds=retry_delay(settings, row.attempts))
