"""The webhook sender service: due outbox rows as signed POSTs to the checked address, retried
with backoff.

Each body is rendered by the order's dialect when it is sent, so a delivery retried hours later
carries output URLs valid for the full EASEL_URL_TTL_SECONDS from that moment. At least once: a
row is claimed for a while before it is sent, and a sender that dies mid-way leaves it to be sent
again later with the same `webhook-id`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from easel import metrics
from easel.clock import utcnow
from easel.config import Settings
from easel.db.engine import Database
from easel.db.tables import Account, Order, Output, WebhookDelivery
from easel.dialects.registry import dialect_of
from easel.net.pinned import send_checked
from easel.net.policy import url_policy
from easel.orders.lifecycle import get_outputs
from easel.services.base import wait_any
from easel.storage import Storage
from easel.webhooks import outbox, signing

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
        url_policy(settings),
        max_redirects=settings.webhook_max_redirects,
        headers=headers | {"user-agent": USER_AGENT},
        content=body,
    )
    await response.aclose()
    return response.status_code


def as_of(order: Order, event: str) -> Order:
    """The order as the event saw it: a later status (a `started` event sent after the order
    ended) is not shown early. A detached copy; the session's row is untouched."""
    status = outbox.status_of(event)
    if order.status == status:
        return order
    columns = {c.key: getattr(order, c.key) for c in Order.__mapper__.column_attrs}
    return Order(**columns | {"status": status, "completed_at": None, "progress": 0, "step": 0})


async def render(session: AsyncSession, row: WebhookDelivery, storage: Storage) -> bytes:
    """The delivery's body in its order's dialect, with URLs signed now."""
    order = await session.get(Order, row.order_id)
    if order is None:
        body = {"order_id": row.order_id, "status": "deleted"}
    else:
        seen = as_of(order, row.event)
        outputs: list[Output] = await get_outputs(session, order.id) if seen is order else []
        body = dialect_of(order.dialect).callback_body(seen, outputs, storage)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


async def deliver_due(
    db: Database,
    client: httpx.AsyncClient,
    settings: Settings,
    storage: Storage,
    limit: int = 20,
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
        status: int | None = None
        error: str | None = None
        try:
            async with db.transaction(readonly=True) as session:
                body = await render(session, row, storage)
        except Exception as exc:  # counted as a failed attempt of this row alone
            log.exception("webhook body failed", extra={"action": "webhook_render_error"})
            await _record(db, settings, row.id, None, f"rendering the body failed: {exc!r}"[:1000])
            continue
        headers = signing.headers(secret, row.id, int(time.time()), body)
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
        metrics.count_webhook_attempt(row.state)


class WebhookSender:
    """Sends due deliveries; looks again every EASEL_WEBHOOK_POLL_INTERVAL when none were due."""

    name = "webhook sender"

    def __init__(self, settings: Settings, db: Database, storage: Storage) -> None:
        self.settings, self.db, self.storage = settings, db, storage

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                try:
                    sent = await deliver_due(self.db, client, self.settings, self.storage)
                except Exception:
                    log.exception("webhook pass failed", extra={"action": "webhook_error"})
                    sent = 0
                if not sent:
                    await wait_any(stop, timeout=self.settings.webhook_poll_interval)
