from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from sqlalchemy import text

from easel import __version__
from easel.api.deps import State
from easel.api.intake import CheckedRoute
from easel.clock import utcnow
from easel.wakeup import children
from easel.worker.presence import count_online

log = logging.getLogger(__name__)

router = APIRouter(route_class=CheckedRoute, tags=["health"])


class Health(BaseModel):
    ok: bool
    version: str
    database: str
    waiters: int = Field(description="Streams, waits and long polls this process follows")
    change_feed_reads: int = Field(description="Statements its change feed ran since start")


@router.get("/healthz", summary="Liveness and database reachability", response_model=Health)
async def healthz(state: State) -> dict[str, Any]:
    async with state.db.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return {
        "ok": True,
        "version": __version__,
        "database": state.db.url.get_backend_name(),
        "waiters": state.feed.waiters,
        "change_feed_reads": state.feed.queries,
    }


class Ready(BaseModel):
    ok: bool
    database: str = Field(description="`ok`, or why it could not be reached")
    workers: int = Field(description="Workers heard from within three heartbeats")
    embedded_worker: str | None = Field(
        description="`easel serve`'s own worker child: `up`, or `down` and how it last ended; "
        "null when this process runs none"
    )
    reasons: list[str] = Field(description="Why it is not ready (empty when ready)")


@router.get(
    "/readyz",
    summary="Readiness: the database answers and a worker is live (503 otherwise)",
    response_model=Ready,
    responses={503: {"model": Ready, "description": "Not ready: see `reasons`"}},
)
async def readyz(state: State, response: Response) -> dict[str, Any]:
    reasons: list[str] = []
    database, workers = "ok", 0
    heartbeat = timedelta(seconds=state.settings.worker_heartbeat_seconds)
    try:
        async with state.db.connect() as conn:
            await conn.execute(text("SELECT 1"))
        async with state.db.transaction(readonly=True) as session:
            workers = await count_online(session, utcnow(), heartbeat)
    except Exception as exc:  # any failure to answer is "not ready", never a 500
        log.warning(
            "readiness: database unreachable", extra={"action": "readyz", "error": str(exc)}
        )
        database = f"unreachable ({type(exc).__name__})"
        reasons.append(f"the database does not answer ({type(exc).__name__})")
    if database == "ok" and not workers:
        reasons.append(
            f"no worker was heard from within {3 * heartbeat.total_seconds():g} s "
            "(three heartbeats); start `easel worker`"
        )
    embedded = None
    for child in children():
        if child.command != "worker":
            continue
        embedded = "up" if child.up else "down"
        if not child.up:
            ended = f" (it {child.last_exit}; restarts: {child.restarts})" if child.restarts else ""
            embedded += ended
            reasons.append("easel serve's worker child is down or starting" + ended)
    if reasons:
        response.status_code = 503
        response.headers["Retry-After"] = "5"
    return {
        "ok": not reasons,
        "database": database,
        "workers": workers,
        "embedded_worker": embedded,
        "reasons": reasons,
    }
