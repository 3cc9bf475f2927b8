"""The account's webhook deliveries: log, manual redelivery, signing secret."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from easel.api.deps import CurrentAccount, ReadSessionDep, SessionDep, State
from easel.clock import iso, utcnow
from easel.db.tables import Account, WebhookDelivery
from easel.errors import NotFound
from easel.webhooks.signing import new_secret

router = APIRouter(tags=["webhooks"])


def delivery_view(row: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "order_id": row.order_id,
        "url": row.url,
        "event": row.event,
        "state": row.state,
        "attempts": row.attempts,
        "last_status": row.last_status,
        "last_error": row.last_error,
        "last_attempt_at": iso(row.last_attempt_at),
        "next_attempt_at": iso(row.next_attempt_at) if row.state == "pending" else None,
        "created_at": iso(row.created_at),
        "delivered_at": iso(row.delivered_at),
    }


@router.get("/api/v1/webhooks/deliveries", summary="This account's webhook deliveries")
async def deliveries(
    account: CurrentAccount,
    session: ReadSessionDep,
    state: State,
    limit: Annotated[int, Query(ge=1)] = 50,
    order_id: Annotated[str | None, Query()] = None,
    delivery_state: Annotated[str | None, Query(alias="state")] = None,
) -> Any:
    query = select(WebhookDelivery).where(WebhookDelivery.account_id == account.id)
    if order_id:
        query = query.where(WebhookDelivery.order_id == order_id)
    if delivery_state:
        query = query.where(WebhookDelivery.state == delivery_state)
    rows = await session.scalars(
        query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(
            min(limit, state.settings.orders_page_max)
        )
    )
    return {"ok": True, "deliveries": [delivery_view(r) for r in rows]}


@router.post(
    "/api/v1/webhooks/deliveries/{delivery_id}/redeliver",
    summary="Send a delivery again now, with the same webhook-id",
)
async def redeliver(delivery_id: str, account: CurrentAccount, session: SessionDep) -> Any:
    row = await session.scalar(
        select(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.account_id == account.id)
        .with_for_update()
    )
    if row is None:
        raise NotFound(f"no webhook delivery {delivery_id} in this account")
    row.state = "pending"
    row.attempts = 0
    row.next_attempt_at = utcnow()
    await session.flush()
    return {"ok": True, "delivery": delivery_view(row)}


@router.post("/api/v1/webhooks/secret/rotate", summary="Replace the webhook signing secret")
async def rotate_secret(account: CurrentAccount, session: SessionDep) -> Any:
    row = await session.get(Account, account.id, with_for_update=True)
    assert row is not None
    row.webhook_secret = new_secret()
    await session.flush()
    return {"ok": True, "webhook_secret": row.webhook_secret}
