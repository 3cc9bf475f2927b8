"""The account's webhooks: delivery log, manual redelivery, endpoints (state, re-enable),
signing secret."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from easel.api.deps import CurrentAccount, ReadSessionDep, SessionDep, State
from easel.api.errors import NativeError, error_responses
from easel.api.intake import CheckedRoute
from easel.clock import iso, utcnow
from easel.db.tables import WebhookDelivery, WebhookEndpoint
from easel.webhooks import deliveries as delivery_log
from easel.webhooks import endpoints as endpoint_list

router = APIRouter(
    route_class=CheckedRoute,
    tags=["webhooks"],
    responses=error_responses(NativeError, (401, 403, 404, 503)),
)


ENDPOINT_STATES = "active / backing_off (failing: one probe delivery at a time) / disabled"


class WebhookDeliveryView(BaseModel):
    id: str = Field(description="The webhook-id header of every attempt")
    order_id: str
    url: str
    endpoint_id: str = Field(description="Its endpoint: the URL's scheme, host and port")
    endpoint_state: str = Field(description=ENDPOINT_STATES)
    event: str = Field(description="order.started / order.completed / order.failed / ...")
    state: str = Field(description="pending / delivered / failed")
    attempts: int
    last_status: int | None
    last_error: str | None
    last_attempt_at: str | None
    last_duration_ms: int | None = Field(description="How long the last attempt took")
    next_attempt_at: str | None = Field(
        description="Only while pending and its endpoint is not disabled (a backing-off "
        "endpoint's deliveries wait for its next probe as well)"
    )
    created_at: str | None = Field(description="When the status change it reports happened")
    delivered_at: str | None
    latency_ms: int | None = Field(description="From created_at to the 2xx, once delivered")


class WebhookDeliveryLog(BaseModel):
    ok: bool
    deliveries: list[WebhookDeliveryView]


class WebhookRedelivered(BaseModel):
    ok: bool
    delivery: WebhookDeliveryView


class WebhookSecret(BaseModel):
    ok: bool
    webhook_secret: str


class WebhookEndpointView(BaseModel):
    id: str
    url: str = Field(description="scheme://host:port; every webhook URL there shares it")
    state: str = Field(description=ENDPOINT_STATES)
    consecutive_failures: int
    failing_since: str | None = Field(description="Start of the current run of failures")
    next_probe_at: str | None = Field(description="While backing off: its next (single) try")
    disabled_at: str | None
    disabled_reason: str | None
    pending: int = Field(description="Deliveries waiting (not delivered, not given up)")
    in_flight: int
    last_success_at: str | None
    last_failure_at: str | None
    created_at: str


class WebhookEndpoints(BaseModel):
    ok: bool
    endpoints: list[WebhookEndpointView]


class WebhookEndpointEnabled(BaseModel):
    ok: bool
    endpoint: WebhookEndpointView
    resent: int = Field(description="Pending deliveries now due again, oldest first")


def endpoint_state(endpoint: WebhookEndpoint | None) -> str:
    return endpoint_list.ACTIVE if endpoint is None else endpoint_list.state_of(endpoint, utcnow())


def delivery_view(row: WebhookDelivery, endpoint: WebhookEndpoint | None) -> dict[str, Any]:
    state = endpoint_state(endpoint)
    waiting = row.state == "pending" and state != endpoint_list.DISABLED
    next_attempt = row.next_attempt_at
    if waiting and endpoint is not None and endpoint.retry_at and endpoint.retry_at > next_attempt:
        next_attempt = endpoint.retry_at
    delivered = row.delivered_at
    return {
        "id": row.id,
        "order_id": row.order_id,
        "url": row.url,
        "endpoint_id": row.endpoint_id,
        "endpoint_state": state,
        "event": row.event,
        "state": row.state,
        "attempts": row.attempts,
        "last_status": row.last_status,
        "last_error": row.last_error,
        "last_attempt_at": iso(row.last_attempt_at),
        "last_duration_ms": row.last_duration_ms,
        "next_attempt_at": iso(next_attempt) if waiting else None,
        "created_at": iso(row.created_at),
        "delivered_at": iso(delivered),
        "latency_ms": (
            int((delivered - row.created_at).total_seconds() * 1000) if delivered else None
        ),
    }


def endpoint_view(summary: endpoint_list.EndpointSummary) -> dict[str, Any]:
    e = summary.endpoint
    state = endpoint_list.state_of(e, utcnow())
    return {
        "id": e.id,
        "url": e.origin,
        "state": state,
        "consecutive_failures": e.consecutive_failures,
        "failing_since": iso(e.failing_since),
        "next_probe_at": iso(e.retry_at) if state == endpoint_list.BACKING_OFF else None,
        "disabled_at": iso(e.disabled_at),
        "disabled_reason": e.disabled_reason,
        "pending": summary.pending,
        "in_flight": e.in_flight,
        "last_success_at": iso(e.last_success_at),
        "last_failure_at": iso(e.last_failure_at),
        "created_at": iso(e.created_at) or "",
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
    found = await endpoint_list.endpoints_by_id(session, [r.endpoint_id for r in rows])
    return {"ok": True, "deliveries": [delivery_view(r, found.get(r.endpoint_id)) for r in rows]}


@router.post(
    "/api/v1/webhooks/deliveries/{delivery_id}/redeliver",
    summary="Send a delivery again now, with the same webhook-id",
    response_model=WebhookRedelivered,
    responses={
        409: {
            "model": NativeError,
            "description": "Its endpoint is disabled: enable the endpoint (which sends its "
            "backlog) instead",
        }
    },
)
async def redeliver(
    delivery_id: str, account: CurrentAccount, session: SessionDep
) -> dict[str, Any]:
    row = await delivery_log.redeliver(session, account.id, delivery_id, utcnow())
    found = await endpoint_list.endpoints_by_id(session, [row.endpoint_id])
    return {"ok": True, "delivery": delivery_view(row, found.get(row.endpoint_id))}


@router.get(
    "/api/v1/webhooks/endpoints",
    summary="This account's webhook endpoints: state, failures, next probe, disabled",
    response_model=WebhookEndpoints,
)
async def endpoints(account: CurrentAccount, session: ReadSessionDep) -> dict[str, Any]:
    found = await endpoint_list.list_endpoints(session, account.id)
    return {"ok": True, "endpoints": [endpoint_view(e) for e in found]}


@router.post(
    "/api/v1/webhooks/endpoints/{endpoint_id}/enable",
    summary="Send to a disabled (or backing-off) endpoint again; its backlog goes out in order",
    response_model=WebhookEndpointEnabled,
)
async def enable_endpoint(
    endpoint_id: str, account: CurrentAccount, session: SessionDep
) -> dict[str, Any]:
    enabled = await endpoint_list.enable(session, account.id, endpoint_id, utcnow())
    view = endpoint_view(enabled) | {"pending": enabled.pending}
    return {"ok": True, "endpoint": view, "resent": enabled.pending}


@router.post(
    "/api/v1/webhooks/secret/rotate",
    summary="Replace the webhook signing secret",
    response_model=WebhookSecret,
)
async def rotate_secret(account: CurrentAccount, session: SessionDep) -> dict[str, Any]:
    return {"ok": True, "webhook_secret": await delivery_log.rotate_secret(session, account.id)}
