"""The operator's routes: /api/v1/admin/... for admin accounts (accounts.is_admin).

Anyone else, a missing or unknown key included, gets the 404 of a path that does not exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from easel.accounts.keys import authenticate
from easel.api.deps import ReadSessionDep, State, api_key_from
from easel.api.errors import NativeError, error_responses
from easel.api.intake import CheckedRoute
from easel.clock import utcnow
from easel.db.status import OrderStatus
from easel.db.tables import Account, Order
from easel.dialects.native import NativeStatus, native_status, with_routes
from easel.errors import NotFound, Unauthorized
from easel.orders import queue, reads
from easel.orders.channel_report import channel_report

NOT_FOUND = "Not Found"  # what a path that does not exist answers


async def admin_account(request: Request, state: State) -> Account:
    """The key's account when it is an admin's; NotFound otherwise."""
    try:
        plain = api_key_from(request)
        async with state.db.transaction(readonly=True) as session:
            account, _key = await authenticate(session, plain)
    except Unauthorized:
        raise NotFound(NOT_FOUND) from None
    if not account.is_admin:
        raise NotFound(NOT_FOUND)
    return account


AdminAccount = Annotated[Account, Depends(admin_account)]

router = APIRouter(
    route_class=CheckedRoute,
    tags=["admin"],
    responses=error_responses(NativeError, (404, 503)),
)


class ChannelWindow(BaseModel):
    attempts: int = Field(description="Finished tries (not canceled ones, not hand-offs)")
    succeeded: int
    success_rate: float | None = Field(description="succeeded / attempts; null: none")
    latency_ms_p50: int | None = Field(description="Submit to downloaded outputs, succeeded tries")
    latency_ms_p95: int | None
    cost: float = Field(description="What the provider was paid (cost_per_image), all tries")
    images: int = Field(description="Images delivered")
    cost_per_image: float | None = Field(description="cost / images; null: none delivered")


class ChannelWorker(BaseModel):
    worker_id: str
    state: str = Field(description="ok, cooling, or probing (its one try after a cool-down)")
    failures_in_a_row: int
    cooling_until: str | None


class ChannelView(BaseModel):
    model: str
    channel: str
    provider: str
    priority: int
    usable: bool = Field(description="false: its credential variable is unset")
    max_in_flight: int = Field(description="Per worker")
    configured_cost_per_image: float
    state: str = Field(
        description="ok; cooling: every worker that tried it lately rests it; partly_cooling: "
        "some do (each worker process has its own breaker)"
    )
    cooling_until: str | None = Field(description="The latest end of a worker's cool-down")
    workers: list[ChannelWorker] = Field(description="Each worker's breaker, from its attempts")
    in_flight: int = Field(description="Attempts waiting on the provider now, all workers")
    last_hour: ChannelWindow
    last_day: ChannelWindow


class ChannelList(BaseModel):
    generated_at: str
    truncated: bool = Field(description="true: more attempts than one report reads (the newest)")
    channels: list[ChannelView]


class AdminOrder(NativeStatus):
    account_id: str


@router.get(
    "/api/v1/admin/channels",
    summary="Upstream channels: state, success rate, latency, cost, in flight (admin)",
    response_model=ChannelList,
)
async def channels(_admin: AdminAccount, session: ReadSessionDep, state: State) -> dict[str, Any]:
    return await channel_report(session, state.catalog, utcnow())


@router.get(
    "/api/v1/admin/orders/{order_id}",
    summary="Any account's order with the route it took (admin)",
    response_model=AdminOrder,
    response_model_exclude_unset=True,
)
async def order(
    order_id: str, _admin: AdminAccount, session: ReadSessionDep, state: State
) -> dict[str, Any]:
    found = await session.get(Order, order_id)
    if found is None:
        raise NotFound(f"order {order_id} not found")
    found, outputs = await reads.with_outputs(session, found)
    waiting = found.status == OrderStatus.PENDING
    position = await queue.queue_position(session, found) if waiting else None
    body = native_status(found, outputs, state.storage, position) | {"account_id": found.account_id}
    [body] = await with_routes(session, [body], True)
    return body
