"""The account's webhook deliveries: log, manual redelivery, signing secret."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from easel.api.deps import CurrentAccount, ReadSessionDep, SessionDep, State
from easel.api.errors import NativeError, error_responses
from easel.api.intake import CheckedRoute
from easel.clock import iso, utcnow
from easel.db.tables import WebhookDelivery
from easel.webhooks import deliveries as delivery_log

router = APIRouter(
    route_class=CheckedRoute,
    tags=["webhooks"],
    responses=error_responses(NativeError, (401, 403, 404, 503)),
)


class WebhookDeliveryView(BaseModel):
    id: str = Field(description="The webhook-id header of every attempt")
    order_id: str
    url: str
    event: str = Field(description="order.started / order.completed / order.failed / ...")
    state: str = Field(description="pending / delivered / failed")
    attempts: int
    last_status: int | None
    last_error: str | None
    last_attempt_at: str | None
    next_attempt_at: str | None = Field(description="Only while pending")
    created_at: str | None
    delivered_at: str | None


class WebhookDeliveryLog(BaseModel):
    ok: bool
    deliveries: list[WebhookDeliveryView]


class WebhookRedelivered(BaseModel):
    ok: bool
    delivery: WebhookDeliveryView


class WebhookSecret(BaseModel):
    ok: bool
    webhook_secret: str


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


@router.get(
    "/api/v1/webhooks/deliveries",
    summary="This account's webhook deliveries",
    response_model=WebhookDeliveryLog,
)
async def deliveries(
    account: CurrentAccount,
    session: ReadSessionDep,
    state: State,
    limit: Annotated[int, Query(ge=1)] = 50,
    order_id: Annotated[str | None, Query()] = None,
    delivery_state: Annotated[str | None, Query(alias="state")] = None,
) -> dict[str, Any]:
    rows = await delivery_log.list_deliveries(
        session,
        account.id,
        limit=min(limit, state.settings.orders_page_max),
        order_id=order_id,
        state=delivery_state,
    )
    return {"ok": True, "deliveries": [delivery_view(r) for r in rows]}


@router.post(
    "/api/v1/webhooks/deliveries/{delivery_id}/redeliver",
    summary="Send a delivery again now, with the same webhook-id",
    response_model=WebhookRedelivered,
)
async def redeliver(
    delivery_id: str, account: CurrentAccount, session: SessionDep
) -> dict[str, Any]:
    row = await delivery_log.redeliver(session, account.id, delivery_id, utcnow())
    return {"ok": True, "delivery": delivery_view(row)}


@router.post(
    "/api/v1/webhooks/secret/rotate",
    summary="Replace the webhook signing secret",
    response_model=WebhookSecret,
)
async def rotate_secret(account: CurrentAccount, session: SessionDep) -> dict[str, Any]:
    return {"ok": True, "webhook_secret": await delivery_log.rotate_secret(session, account.id)}
