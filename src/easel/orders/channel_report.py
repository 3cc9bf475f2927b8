"""The operator's channel report (GET /api/v1/admin/channels): per remote channel of each upstream
model, its breaker state, and over the last hour and day its success rate, latency, cost per image,
from the attempt rows in one bounded query; and its orders in flight now.

The breaker lives in each worker process's memory (backends/upstream/routing.py), so every
worker cools a channel on its own failures. The report replays each worker's attempts (by
`worker_id`, in the order they finished) through the same `Breaker`: what it shows is what each
worker's breaker holds, however many workers there are, without workers writing anything more.
A channel is `cooling` when every worker that tried it lately rests it, `partly_cooling` when
some do. A worker that died while cooling is shown until that cool-down ends.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from easel.backends.upstream.routing import Breaker
from easel.catalog import Catalog, Channel
from easel.clock import iso
from easel.db.tables import OrderAttempt

MAX_ROWS = 100_000  # the most attempt rows one report reads (newest first)
WINDOWS = {"last_hour": timedelta(hours=1), "last_day": timedelta(days=1)}
OPEN = ("submitting", "accepted")
FAULTS = ("refused", "failed", "unbilled")  # the breaker's failures (backend.py: _fault)
# Finished tries of the channel itself: the success rate's denominator. Not counted: canceled
# (the client's doing), handed_off (a local channel), open attempts.
FINISHED = ("succeeded", "refused", "rejected", "unbilled", "failed", "lost")


@dataclass
class _Row:
    model: str
    channel: str
    state: str
    worker_id: str | None
    created_at: datetime
    finished_at: datetime | None
    latency_ms: int | None
    cost: float
    images: int
    retry_after: float | None


@dataclass
class _Stats:
    finished: int = 0
    succeeded: int = 0
    cost: float = 0.0
    images: int = 0
    latencies: list[int] = field(default_factory=list)

    def add(self, row: _Row) -> None:
        self.cost += row.cost
        if row.state in FINISHED:
            self.finished += 1
        if row.state == "succeeded":
            self.succeeded += 1
            self.images += row.images
            if row.latency_ms is not None:
                self.latencies.append(row.latency_ms)

    def render(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "attempts": self.finished,
            "succeeded": self.succeeded,
            "success_rate": self.succeeded / self.finished if self.finished else None,
            "latency_ms_p50": _percentile(ordered, 0.50),
            "latency_ms_p95": _percentile(ordered, 0.95),
            "cost": round(self.cost, 6),
            "images": self.images,
            "cost_per_image": round(self.cost / self.images, 6) if self.images else None,
        }


def _percentile(ordered: list[int], q: float) -> int | None:
    """Nearest rank."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _epoch(moment: datetime) -> float:
    return moment.replace(tzinfo=moment.tzinfo or UTC).timestamp()


def _breakers(channel: Channel, rows: Sequence[_Row], now: datetime) -> list[dict[str, Any]]:
    """Each worker's breaker for this channel, replayed from its attempts."""
    by_worker: dict[str, list[_Row]] = defaultdict(list)
    for row in rows:
        by_worker[row.worker_id or ""].append(row)
    found = []
    for worker_id, own in sorted(by_worker.items()):
        breaker = Breaker(channel.failures_to_cool, channel.cool_seconds)
        done = [r for r in own if r.finished_at is not None]
        for row in sorted(done, key=lambda r: (r.finished_at, r.created_at)):
            assert row.finished_at is not None
            if row.state == "succeeded":
                breaker.success()
            elif row.state in FAULTS:
                breaker.failure(_epoch(row.finished_at), row.retry_after)
        state = "ok"
        if breaker.cooling(_epoch(now)):
            state = "cooling"
        elif breaker.tripped and any(
            r.state in OPEN and _epoch(r.created_at) >= breaker.cooling_until for r in own
        ):
            state = "probing"  # its one try after the cool-down is in flight
        until = datetime.fromtimestamp(breaker.cooling_until, UTC) if state == "cooling" else None
        found.append(
            {
                "worker_id": worker_id,
                "state": state,
                "failures_in_a_row": breaker.failures,
                "cooling_until": iso(until),
            }
        )
    return found


def _remote_channels(catalog: Catalog) -> list[tuple[str, Channel]]:
    return [
        (model.id, channel)
        for model in catalog.models.values()
        if model.is_upstream
        for channel in sorted(model.channels, key=lambda c: (c.priority, c.name))
        if not channel.is_local
    ]


async def _rows(
    session: AsyncSession, pairs: Sequence[tuple[str, str]], since: datetime
) -> tuple[list[_Row], bool]:
    """The channels' attempts created since `since`, newest first, at most MAX_ROWS; each OR
    term walks ix_order_attempts_channel_created (model, channel, created_at)."""
    if not pairs:
        return [], False
    query = (
        select(
            OrderAttempt.model,
            OrderAttempt.channel,
            OrderAttempt.state,
            OrderAttempt.worker_id,
            OrderAttempt.created_at,
            OrderAttempt.finished_at,
            OrderAttempt.latency_ms,
            OrderAttempt.cost,
            OrderAttempt.images,
            OrderAttempt.retry_after,
        )
        .where(
            or_(
                *(
                    and_(
                        OrderAttempt.model == model,
                        OrderAttempt.channel == channel,
                        OrderAttempt.created_at >= since,
                    )
                    for model, channel in pairs
                )
            )
        )
        .order_by(OrderAttempt.created_at.desc())
        .limit(MAX_ROWS + 1)
    )
    rows = [_Row(**dict(r._mapping)) for r in (await session.execute(query)).all()]
    return rows[:MAX_ROWS], len(rows) > MAX_ROWS


async def channel_report(session: AsyncSession, catalog: Catalog, now: datetime) -> dict[str, Any]:
    channels = _remote_channels(catalog)
    rows, truncated = await _rows(
        session, [(m, c.name) for m, c in channels], now - WINDOWS["last_day"]
    )
    by_channel: dict[tuple[str, str], list[_Row]] = defaultdict(list)
    for row in rows:
        by_channel[(row.model, row.channel)].append(row)
    report = []
    for model_id, channel in channels:
        own = by_channel.get((model_id, channel.name), [])
        workers = _breakers(channel, own, now)
        resting = [w for w in workers if w["state"] != "ok"]
        cooling = [w["cooling_until"] for w in workers if w["cooling_until"]]
        windows: dict[str, Any] = {}
        for name, span in WINDOWS.items():
            stats = _Stats()
            for row in own:
                if row.created_at >= now - span:
                    stats.add(row)
            windows[name] = stats.render()
        report.append(
            {
                "model": model_id,
                "channel": channel.name,
                "provider": channel.provider,
                "priority": channel.priority,
                "usable": channel.usable,
                "max_in_flight": channel.max_in_flight,
                "configured_cost_per_image": channel.cost_per_image,
                "state": "ok"
                if not resting
                else "cooling"
                if len(resting) == len(workers)
                else "partly_cooling",
                "cooling_until": max(cooling) if cooling else None,
                "workers": workers,
                "in_flight": sum(1 for r in own if r.state in OPEN),
                **windows,
            }
        )
    return {"generated_at": iso(now), "truncated": truncated, "channels": report}
