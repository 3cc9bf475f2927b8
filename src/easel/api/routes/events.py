"""Server-sent events for one order: queued, started, progress, then completed/failed/canceled.

The stream follows the process's change feed (orders/changes.py): it reads nothing itself and
holds no database connection, and sends an event only when something changed, so any API replica
can serve it. Events are derived from the order's state: a stream opened late starts with where
the order is now. When the process stops, every stream ends with a `timeout` event that tells
the client to open it again (on another replica, or this one once it is back).
"""

from __future__ import annotations

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
from easel.db.status import FINAL, OrderStatus
from easel.dialects.native import native_status
from easel.orders import reads
from easel.orders.changes import Watch

log = logging.getLogger(__name__)

router = APIRouter(
    route_class=CheckedRoute,
    tags=["native (seed 000)"],
    responses=error_responses(NativeError, (401, 403, 404, 503)),
)

Event = tuple[str, dict[str, Any]]


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


async def order_watch(order_id: str, account: CurrentAccount, state: State) -> AsyncIterator[Watch]:
    """The order followed on the process's change feed, once the account is known to own it
    (404, or 503 when the process follows as many waiters as it may, before the stream starts);
    let go when the stream ends or the client leaves."""
    async with state.db.transaction(readonly=True) as session:
        await reads.own_order(session, account.id, order_id)
    async with state.feed.watch(order_id) as watch:
        yield watch


@router.get(
    "/api/v1/orders/{order_id}/events",
    response_class=EventSourceResponse,
    summary="Follow an order as server-sent events until it ends",
)
async def order_events(
    order_id: str, watch: Annotated[Watch, Depends(order_watch)], state: State
) -> AsyncIterator[ServerSentEvent]:
    settings = state.settings
    changes = Changes()
    started = quiet_since = time.monotonic()
    seen = 0
    status = ""
    reason = "disconnected"
    try:
        while True:
            if watch.version != seen and watch.snapshot is not None:
                seen = watch.version
                snapshot = watch.snapshot
                if snapshot.order is None:
                    reason = "gone"
                    return
                body = native_status(
                    snapshot.order, snapshot.outputs, state.storage, snapshot.position
                )
                status = body["status"]
                for name, data in changes.events(body):
                    yield ServerSentEvent(event=name, data=data)
                    quiet_since = time.monotonic()
                if status in FINAL:
                    reason = status
                    return
            now = time.monotonic()
            if watch.closing or now - started >= settings.events_max_duration:
                reason = "restart" if watch.closing else "timeout"
                message = (
                    "the server is restarting"
                    if watch.closing
                    else f"this stream ends after {settings.events_max_duration:g} s"
                )
                data = {"order_id": order_id, "status": status or None}
                message += "; open it again to keep following the order"
                yield ServerSentEvent(event="timeout", data=data | {"message": message})
                return
            if now - quiet_since >= settings.events_keepalive_interval:
                yield ServerSentEvent(comment="keep-alive")
                quiet_since = now
            wait = min(
                quiet_since + settings.events_keepalive_interval,
                started + settings.events_max_duration,
            )
            await watch.changed(wait - now)
    finally:
        log.info(
            "events stream ended",
            extra={"action": "events_end", "order_id": order_id, "reason": reason},
        )
