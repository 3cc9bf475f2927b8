"""The `workers` table: each worker's own row, rewritten on start, heartbeat, load and unload."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from easel.db.status import OrderStatus
from easel.db.tables import Order, Worker
from easel.orders.serving import WAITING_FOR_WORKER


@dataclass(frozen=True)
class Presence:
    worker_id: str
    host: str
    device: str
    served_models: Sequence[str] | None  # None: every model of the catalog
    started_at: datetime
    servable_models: Sequence[str] | None = None  # what it can run; None: not reported


async def report(
    session: AsyncSession,
    presence: Presence,
    loaded: Sequence[str],
    loaded_bytes: int,
    now: datetime,
    *,
    stopped: bool = False,
) -> None:
    """Write the worker's row (only the worker itself writes it)."""
    row = await session.get(Worker, presence.worker_id, populate_existing=True)
    if row is None:
        row = Worker(id=presence.worker_id)
        session.add(row)
    row.host = presence.host
    row.device = presence.device
    row.served_models = None if presence.served_models is None else list(presence.served_models)
    servable = presence.servable_models
    row.servable_models = None if servable is None else list(servable)
    row.started_at = presence.started_at
    row.loaded_models = list(loaded)
    row.loaded_bytes = loaded_bytes
    row.last_seen = now
    row.stopped_at = now if stopped else None
    await session.flush()
    if not stopped and servable:  # orders that waited for a worker like this one now have one
        # Rows a claim holds are skipped (and never waited for): a heartbeat must not hide
        # pending orders from a claim's SKIP LOCKED walk; a skipped one is cleared next time.
        waiting = (
            select(Order.id)
            .where(
                Order.status == OrderStatus.PENDING,
                Order.stage == WAITING_FOR_WORKER,
                Order.model.in_(list(servable)),
            )
            .with_for_update(skip_locked=True)
        )
        await session.execute(update(Order).where(Order.id.in_(waiting)).values(stage=None))


async def list_workers(session: AsyncSession, seen_since: datetime) -> list[Worker]:
    """Workers seen since `seen_since` (stopped ones included until then), by id."""
    rows = await session.scalars(
        select(Worker).where(Worker.last_seen >= seen_since).order_by(Worker.id)
    )
    return list(rows)


def is_online(worker: Worker, now: datetime, heartbeat: timedelta) -> bool:
    """Running and heard from within three heartbeats."""
    return worker.stopped_at is None and worker.last_seen >= now - 3 * heartbeat


def describe_device(device: str) -> str:
    """`cuda (NVIDIA H100 80GB HBM3)`, or the device name alone."""
    if not device.startswith("cuda"):
        return device
    import torch

    return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"


async def count_online(session: AsyncSession, now: datetime, heartbeat: timedelta) -> int:
    """Workers `is_online` would call online."""
    count = await session.scalar(
        select(func.count())
        .select_from(Worker)
        .where(Worker.stopped_at.is_(None), Worker.last_seen >= now - 3 * heartbeat)
    )
    return int(count or 0)
