"""GET /api/v1/workers: the workers seen lately, their device and the models they hold.

Any API key may read it (which models are warm tells a client what will start fastest).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from easel.api.deps import CurrentAccount, ReadSessionDep, State
from easel.api.errors import NativeError, error_responses
from easel.api.intake import CheckedRoute
from easel.clock import iso, utcnow
from easel.worker.presence import is_online, list_workers

router = APIRouter(
    route_class=CheckedRoute,
    tags=["workers"],
    responses=error_responses(NativeError, (401, 403, 503)),
)


class WorkerView(BaseModel):
    id: str
    host: str
    device: str
    online: bool = Field(description="Running and heard from within three heartbeats")
    loaded_models: list[str] = Field(description="Least recently used first")
    loaded_bytes: int
    served_models: list[str] | None = Field(description="null: every model of the catalog")
    started_at: str | None
    last_seen: str | None
    stopped_at: str | None


class WorkerList(BaseModel):
    workers: list[WorkerView]


@router.get(
    "/api/v1/workers", summary="Workers, their devices and loaded models", response_model=WorkerList
)
async def workers(
    _account: CurrentAccount, session: ReadSessionDep, state: State
) -> dict[str, Any]:
    settings = state.settings
    now = utcnow()
    heartbeat = timedelta(seconds=settings.worker_heartbeat_seconds)
    rows = await list_workers(session, now - timedelta(seconds=settings.workers_listed_seconds))
    return {
        "workers": [
            {
                "id": row.id,
                "host": row.host,
                "device": row.device,
                "online": is_online(row, now, heartbeat),
                "loaded_models": row.loaded_models,
                "loaded_bytes": row.loaded_bytes,
                "served_models": row.served_models,
                "started_at": iso(row.started_at),
                "last_seen": iso(row.last_seen),
                "stopped_at": iso(row.stopped_at),
            }
            for row in rows
        ]
    }
