"""An account's delivery log, manual redelivery and signing secret.

Each function works in the caller's session and never commits: the change is the caller's
transaction's to keep or roll back.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from easel.db.tables import Account, WebhookDelivery, WebhookEndpoint
from easel.errors import Conflict, NotFound
from easel.webhooks.signing import new_secret


async def list_deliveries(
    session: AsyncSession,
    account_id: str,
    *,
    limit: int,
    order_id: str | None = None,
    state: str | None = None,
) -> list[WebhookDelivery]:
    """Up to `limit` of the account's deliveries, newest first; only one order's, or only those
    in one state (pending / delivered / failed), when given."""
    query = select(WebhookDelivery).where(WebhookDelivery.account_id == account_id)
    if order_id:
        query = query.where(WebhookDelivery.order_id == order_id)
    if state:
        query = query.where(WebhookDelivery.state == state)
    rows = await session.scalars(
        query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(limit)
    )
    return list(rows)


async def redeliver(
    session: AsyncSession, account_id: str, delivery_id: str, now: datetime
) -> WebhookDelivery:
    """Make one of the account's deliveries due again now, with fresh attempts (the sender sends
    it with the same webhook-id). Refused while its endpoint is disabled: enabling the endpoint
    sends its whole backlog."""
    row = await session.scalar(
        select(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.account_id == account_id)
        .with_for_update()
    )
    if row is None:
        raise NotFound(f"no webhook delivery {delivery_id} in this account")
    endpoint = await session.get(WebhookEndpoint, row.endpoint_id)
    if endpoint is not None and endpoint.disabled_at is not None:
        raise Conflict(
            f"webhook endpoint {endpoint.origin} ({endpoint.id}) is disabled; enable it with "
            f"POST /api/v1/webhooks/endpoints/{endpoint.id}/enable, which sends its backlog"
        )
    row.state = "pending"
    row.attempts = 0
    row.next_attempt_at = now
    await session.flush()
    return row


async def rotate_secret(session: AsyncSession, account_id: str) -> str:
    """Replace the account's signing secret; deliveries sent after the commit use the new one."""
    row = await session.get(Account, account_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no account {account_id}")
    row.webhook_secret = new_secret()
    await session.flush()
    return row.webhook_secret
