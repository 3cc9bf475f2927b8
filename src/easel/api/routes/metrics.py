"""GET /metrics: Prometheus text (docs/operations.md).

Not behind an API key: EASEL_METRICS turns it off, EASEL_METRICS_TOKEN makes it ask for
`Authorization: Bearer <token>`. Besides the counters of this process (or of every process
sharing EASEL_METRICS_DIR), each scrape reads the queue, the workers and the webhook outbox from
the database, so those figures are right whichever API process answers and wherever the workers
run. The reads are async and bounded by SCRAPE_DB_TIMEOUT; a database that does not answer gives
`easel_database_up 0` and the rest of the metrics, not an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import timedelta

from fastapi import APIRouter, Request, Response
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from easel import metrics
from easel.api.deps import State
from easel.api.state import AppState
from easel.clock import utcnow
from easel.db.status import OrderStatus
from easel.errors import Unauthorized
from easel.orders import stats
from easel.worker.presence import is_online, list_workers

log = logging.getLogger(__name__)

SCRAPE_DB_TIMEOUT = 5.0  # seconds; under Prometheus' default scrape timeout (10 s)

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
async def scrape(request: Request, state: State) -> Response:
    token = state.settings.metrics_token
    if token and not metrics.token_matches(request.headers.get("authorization", ""), token):
        raise Unauthorized("send the metrics token: Authorization: Bearer <EASEL_METRICS_TOKEN>")
    figures = DatabaseFigures(await database_figures(state))
    body = await asyncio.to_thread(metrics.exposition, figures)
    return Response(body, media_type=metrics.CONTENT_TYPE)


class DatabaseFigures(Collector):
    """The scrape's database figures, read (async) before the collection runs."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


async def database_figures(state: AppState) -> list[Metric]:
    up = GaugeMetricFamily(
        "easel_database_up", "1 when this scrape's database reads succeeded, else 0"
    )
    try:
        async with asyncio.timeout(SCRAPE_DB_TIMEOUT):
            families = await _read(state)
    except Exception as exc:
        log.warning(
            "metrics: database figures unavailable",
            extra={"action": "metrics", "error": f"{type(exc).__name__}: {exc}"},
        )
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    return [up, *families]


async def _read(state: AppState) -> list[Metric]:
    settings = state.settings
    now = utcnow()
    async with state.db.transaction(readonly=True) as session:
        groups = await stats.queue_groups(session)
        outbox = await stats.outbox(session, now)
        seen = now - timedelta(seconds=settings.workers_listed_seconds)
        workers = await list_workers(session, seen)

    depth = GaugeMetricFamily(
        "easel_queue_depth", "Orders waiting to be claimed", labels=["priority", "model"]
    )
    oldest = GaugeMetricFamily(
        "easel_queue_oldest_age_seconds",
        "Age of the oldest order waiting to be claimed",
        labels=["priority", "model"],
    )
    running = GaugeMetricFamily(
        "easel_orders_running", "Orders a worker is running now", labels=["priority", "model"]
    )
    for g in groups:
        labels = [str(g.priority), g.model]
        if g.status == OrderStatus.PENDING:
            depth.add_metric(labels, g.orders)
            oldest.add_metric(labels, max(0.0, (now - g.oldest).total_seconds()))
        else:
            running.add_metric(labels, g.orders)

    heartbeat = timedelta(seconds=settings.worker_heartbeat_seconds)
    states = {"online": 0, "offline": 0, "stopped": 0}
    last_beat = GaugeMetricFamily(
        "easel_worker_last_heartbeat_timestamp_seconds",
        "When each worker that has not stopped last wrote its presence (Unix time)",
        labels=["worker_id"],
    )
    for w in workers:
        if w.stopped_at is not None:
            states["stopped"] += 1
            continue
        states["online" if is_online(w, now, heartbeat) else "offline"] += 1
        last_beat.add_metric([w.id], w.last_seen.timestamp())
    counted = GaugeMetricFamily(
        "easel_workers",
        "Workers seen within EASEL_WORKERS_LISTED_SECONDS: online (heard within three "
        "heartbeats), offline (not stopped, but silent), stopped",
        labels=["state"],
    )
    for name, count in states.items():
        counted.add_metric([name], count)

    pending = GaugeMetricFamily(
        "easel_webhook_deliveries_pending", "Webhook deliveries not yet delivered nor given up"
    )
    pending.add_metric([], outbox.pending)
    due = GaugeMetricFamily(
        "easel_webhook_deliveries_due", "Pending webhook deliveries due for an attempt now"
    )
    due.add_metric([], outbox.due)
    return [depth, oldest, running, counted, last_beat, pending, due]
