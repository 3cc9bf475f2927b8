"""Which models live workers serve: each worker advertises what it can run (`workers` table)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from easel.db.tables import Worker

# orders.stage: an order no live worker serves; a running order whose worker loads its model.
WAITING_FOR_WORKER = "waiting_for_worker"
LOADING_MODEL = "loading_model"
GENERATING = "generating"


async def is_served(
    session: AsyncSession, model_id: str, now: datetime, heartbeat: timedelta
) -> bool:
    """Whether a live worker (heard from within three heartbeats) serves `model_id`."""
    rows = await session.execute(
        select(Worker.served_models, Worker.servable_models).where(
            Worker.stopped_at.is_(None), Worker.last_seen >= now - 3 * heartbeat
        )
    )
    return any(
        (served is None or model_id in served) and (servable is None or model_id in servable)
        for served, servable in rows
    )


def waiting_message(model_id: str) -> str:
    return f"waiting for a worker that serves {model_id}"
