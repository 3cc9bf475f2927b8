"""Webhook endpoints: where one account's webhooks go (scheme + host + port of their URLs).

Concurrency, backoff and disabling are kept per endpoint (webhooks/claim.py, the sender), so one
customer's slow or broken receiver never holds anyone else's callbacks. An endpoint's row is
made when the first delivery to it is flushed (`_route_new_deliveries`): the outbox stays one
`session.add` in the caller's transaction.

Each function works in the caller's session and never commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from easel.db.tables import WebhookDelivery, WebhookEndpoint
from easel.errors import NotFound

DEFAULT_PORTS = {"http": 80, "https": 443}

ACTIVE, BACKING_OFF, DISABLED = "active", "backing_off", "disabled"


def origin_of(url: str) -> str:
    """`scheme://host:port` of a webhook URL, lower-cased, with the default port written out."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def endpoint_id(account_id: str, origin: str) -> str:
    """The same id for the same account and origin in every process (no lookup needed)."""
    digest = hashlib.sha256(f"{account_id}\n{origin}".encode()).hexdigest()
    return "wep_" + digest[:24]


def state_of(endpoint: WebhookEndpoint, now: datetime) -> str:
    if endpoint.disabled_at is not None:
        return DISABLED
    if endpoint.retry_at is not None and endpoint.retry_at > now:
        return BACKING_OFF
    return ACTIVE


@event.listens_for(Session, "before_flush")
def _route_new_deliveries(session: Session, _context: Any, _instances: Any) -> None:
    """Give each new delivery its endpoint, making the endpoint's row if it is the first."""
    rows: dict[str, dict[str, Any]] = {}
    for obj in session.new:
        if isinstance(obj, WebhookDelivery) and not obj.endpoint_id:  # not routed yet
            origin = origin_of(obj.url)
            obj.endpoint_id = endpoint_id(obj.account_id, origin)
            rows[obj.endpoint_id] = {
                "id": obj.endpoint_id,
                "account_id": obj.account_id,
                "origin": origin,
                "created_at": obj.created_at,
            }
    if not rows:
        return
    connection = session.connection()
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(WebhookEndpoint).on_conflict_do_nothing(index_elements=["id"])
    connection.execute(insert, list(rows.values()))


@dataclass(frozen=True)
class EndpointSummary:
    endpoint: WebhookEndpoint
    pending: int  # deliveries not delivered and not given up


async def list_endpoints(session: AsyncSession, account_id: str) -> list[EndpointSummary]:
    """The account's endpoints, oldest first, each with its count of pending deliveries."""
    pending = (
        select(WebhookDelivery.endpoint_id, func.count().label("pending"))
        .where(WebhookDelivery.account_id == account_id, WebhookDelivery.state == "pending")
        .group_by(WebhookDelivery.endpoint_id)
        .subquery()
    )
    rows = await session.execute(
        select(WebhookEndpoint, func.coalesce(pending.c.pending, 0))
        .outerjoin(pending, pending.c.endpoint_id == WebhookEndpoint.id)
        .where(WebhookEndpoint.account_id == account_id)
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    )
    return [EndpointSummary(endpoint, int(count)) for endpoint, count in rows.all()]


async def disabled_endpoints(session: AsyncSession, account_id: str) -> list[WebhookEndpoint]:
    rows = await session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.account_id == account_id, WebhookEndpoint.disabled_at.is_not(None))
        .order_by(WebhookEndpoint.disabled_at, WebhookEndpoint.id)
    )
    return list(rows)


async def endpoints_by_id(session: AsyncSession, ids: Sequence[str]) -> dict[str, WebhookEndpoint]:
    if not ids:
        return {}
    rows = await session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.id.in_(set(ids))))
    return {row.id: row for row in rows}


async def enable(
    session: AsyncSession, account_id: str, endpoint: str, now: datetime
) -> EndpointSummary:
    """Send to the endpoint again: its failure run is forgotten and its backlog is due now, in
    the order it was created, each delivery with its own webhook-id and a full set of attempts.
    Enabling an endpoint that is not disabled also ends its backoff."""
    row = await session.scalar(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint, WebhookEndpoint.account_id == account_id)
        .with_for_update()
    )
    if row is None:
        raise NotFound(
            f"no webhook endpoint {endpoint} in this account; GET /api/v1/webhooks/endpoints "
            "lists them"
        )
    row.disabled_at = None
    row.disabled_reason = None
    row.consecutive_failures = 0
    row.failing_since = None
    row.retry_at = None
    backlog = await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == row.id, WebhookDelivery.state == "pending")
        .values(next_attempt_at=now, attempts=0)
    )
    await session.flush()
    return EndpointSummary(row, int(getattr(backlog, "rowcount", 0) or 0))


async def failing_endpoints(session: AsyncSession, limit: int) -> list[WebhookEndpoint]:
    """Endpoints of any account that failed last or are disabled, longest failing first."""
    rows = await session.scalars(
        select(WebhookEndpoint)
        .where(
            (WebhookEndpoint.consecutive_failures > 0) | WebhookEndpoint.disabled_at.is_not(None)
        )
        .order_by(WebhookEndpoint.failing_since)
        .limit(limit)
    )
    return list(rows)
