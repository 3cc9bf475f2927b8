"""Server-sent events for one order: queued, started, progress, then completed/failed/canceled.

The stream polls the order in short read-only transactions and sends an event only when
something changed, so any API replica can serve it. Events are derived from the order's state:
a stream opened late starts with where the order is now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.sse import EventSourceResponse, ServerSentEvent

from easel.api.deps import CurrentAccount, State
from easel.api.errors import NativeError, error_responses
from easel.api.intake import CheckedRoute
from easel.api.state import AppState
from easel.db.status import FINAL, OrderStatus
from easel.db.tables import Account
from easel.dialects.native import read_status
from easel.errors import NotFound
from easel.orders import reads

log = logging.getLogger(__name__)

router = APIRouter(
    route_class=CheckedRoute,
    tags=["native (seed 000)"],
    responses=error_responses(NativeError, (401, 403, 404, 503)),
)

Event = tuple[str, dict[str, Any]]


async def order_owner(order_id: str, account: CurrentAccount, state: State) -> Account:
    """The account, once it is known to own the order (404 before the stream starts)."""
    async with state.db.transaction(readonly=True) as session:
        await reads.own_order(session, account.id, order_id)
    return account


@dataclass
class Changes:
    """What the client has been told; `events` turns the next status body into new events."""

    status: str = ""
    position: int | None = None
    attempt: int = 0
    step: int = 0
    loading: dict[str, Any] | None = None

    def events(self, body: dict[str, Any]) -> list[Event]:
        status = body["status"]
        about = {"order_id": body["order_id"]}
        out: list[Event] = []
        if status == OrderStatus.PENDING:
            if self.status != OrderStatus.PENDING or body["queue_position"] != self.position:
                queued = {"status": status, "queue_position": body["queue_position"]}
                out.append(("queued", about | queued))
            self.position, self.step = body["queue_position"], 0
        else:
            if body["started_at"] and body["attempts"] != self.attempt:
                started = {"started_at": body["started_at"], "attempt": body["attempts"]}
                out.append(("started", about | {"status": OrderStatus.RUNNING} | started))
                self.attempt, self.step = body["attempts"], 0
            loading = body.get("loading_model")
            if loading and loading != self.loading:
                out.append(("loading_model", about | {"status": status} | loading))
            self.loading = loading
            if body["total_steps"] and body["step"] > self.step:
                step, total = body["step"], body["total_steps"]
                progress = {"step": step, "total_steps": total, "percent": body["progress"]}
                out.append(("progress", about | progress))
                self.step = step
            if status in FINAL:
                out.append((status, body))
        self.status = status
        return out


async def _status_body(state: AppState, account_id: str, order_id: str) -> dict[str, Any] | None:
    async with state.db.transaction(readonly=True) as session:
        try:
            return await read_status(session, account_id, order_id, state.storage)
        except NotFound:
            return None


@router.get(
    "/api/v1/orders/{order_id}/events",
    response_class=EventSourceResponse,
    summary="Follow an order as server-sent events until it ends",
)
async def order_events(
    order_id: str, account: Annotated[Account, Depends(order_owner)], state: State
) -> AsyncIterator[ServerSentEvent]:
    settings = state.settings
    changes = Changes()
    started = quiet_since = time.monotonic()
    reason = "disconnected"
    try:
        while True:
            body = await _status_body(state, account.id, order_id)
            if body is None:
                reason = "gone"
                return
            for name, data in changes.events(body):
                yield ServerSentEvent(event=name, data=data)
                quiet_since = time.monotonic()
            if body["status"] in FINAL:
                reason = body["status"]
                return
            now = time.monotonic()
            if now - started >= settings.events_max_duration:
                reason = "timeout"
                message = (
                    f"this stream ends after {settings.events_max_duration:g} s; "
                    "open it again to keep following the order"
                )
                yield ServerSentEvent(
                    event="timeout",
                    data={"order_id": order_id, "status": body["status"], "message": message},
                )
                return
            if now - quiet_since >= settings.events_keepalive_interval:
                yield ServerSentEvent(comment="keep-alive")
                quiet_since = now
            await asyncio.sleep(settings.events_poll_interval)
    finally:
        log.info(
            "events stream ended",
            extra={"action": "events_end", "order_id": order_id, "reason": reason},
        )
