"""Every Prometheus metric Easel records, defined once; docs/operations.md says what each means.

A process keeps its metrics in memory, unless EASEL_METRICS_DIR names a directory that several
processes of one host share (`easel serve` and its children, several uvicorn workers): then each
writes its own files there (prometheus_client's multiprocess mode) and a scrape of any of them
adds them all up. prometheus_client chooses the mode when it is first imported, so this module
reads the variable before importing it; import it before anything else imports prometheus_client.

Queue depth, workers and the webhook backlog are read from the database when /metrics is
scraped (`api/routes/metrics.py`), so they are right whichever process answers.
"""

from __future__ import annotations

import os

if os.environ.get("EASEL_METRICS_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["EASEL_METRICS_DIR"]
    os.makedirs(os.environ["EASEL_METRICS_DIR"], exist_ok=True)

import hmac
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series, as when shared

# Seconds. Requests include server-sent event streams and OpenAI waits (up to minutes).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
CLAIM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# Seconds from a status change to its webhook's 2xx: sub-second when healthy, hours on retries.
WEBHOOK_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600)
GENERATION_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200)

HTTP_REQUESTS = Counter(
    "easel_http_requests",
    "HTTP requests answered, by method, route template and status code",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "easel_http_request_duration_seconds",
    "Time to answer an HTTP request (to the end of its body), by method and route template",
    ["method", "route"],
    buckets=REQUEST_BUCKETS,
)
HTTP_IN_PROGRESS = Gauge(
    "easel_http_requests_in_progress",
    "HTTP requests being answered now (open event streams and OpenAI waits included)",
    multiprocess_mode="livesum",
)
SUBMIT_DURATION = Histogram(
    "easel_submit_duration_seconds",
    "Placing an order (checks, reference image, debit and order row), by dialect and outcome "
    "(placed, replayed, refused, error)",
    ["dialect", "outcome"],
    buckets=REQUEST_BUCKETS,
)
CLAIM_DURATION = Histogram(
    "easel_claim_duration_seconds",
    "A worker's claim of a batch (leader and followers), by outcome (claimed, empty, error)",
    ["outcome"],
    buckets=CLAIM_BUCKETS,
)
GENERATION_DURATION = Histogram(
    "easel_generation_duration_seconds",
    "A batch's successful generation (the pipeline or provider call), by catalog model",
    ["model"],
    buckets=GENERATION_BUCKETS,
)
WORKER_HEARTBEATS = Counter(
    "easel_worker_heartbeats",
    "Presence reports a worker wrote to the workers table (heartbeats, model loads, stop)",
)
CHILD_RESTARTS = Counter(
    "easel_child_restarts",
    "Times `easel serve` restarted a child process that died, by child (worker, services)",
    ["command"],
)
UPSTREAM_ATTEMPTS = Counter(
    "easel_upstream_attempts",
    "Tries of orders on upstream channels, by catalog model, channel, provider and outcome "
    "(succeeded, refused, unbilled, failed, canceled)",
    ["model", "channel", "provider", "outcome"],
)
UPSTREAM_DURATION = Histogram(
    "easel_upstream_attempt_seconds",
    "Seconds from submit to downloaded outputs of a successful upstream attempt, by channel",
    ["channel"],
    buckets=GENERATION_BUCKETS,
)
UPSTREAM_IN_FLIGHT = Gauge(
    "easel_upstream_in_flight",
    "Provider jobs in flight now, by channel (model/channel)",
    ["channel"],
    multiprocess_mode="livesum",
)
UPSTREAM_COST = Counter(
    "easel_upstream_cost",
    "What successful attempts cost the operator at the providers (cost_per_image), by channel",
    ["channel"],
)
UPSTREAM_COOLDOWNS = Counter(
    "easel_upstream_cooldowns",
    "Times a channel started cooling down after failures in a row, by channel",
    ["channel"],
)

CHILD_UP = Gauge(
    "easel_child_up",
    "1 while `easel serve`'s child runs (a worker: once its loop is ready), 0 while it is down",
    ["command"],
    multiprocess_mode="livemax",
)
ORDERS_FINISHED = Counter(
    "easel_orders_finished",
    "Orders that reached a final status, by status, catalog model and error code",
    ["status", "model", "code"],
)
REFUNDS = Counter(
    "easel_refunds",
    "Orders refunded, by the status they ended in (failed, canceled)",
    ["status"],
)
REFUNDED_CREDITS = Counter(
    "easel_refunded_credits",
    "Credits given back by refunds, by the status the order ended in",
    ["status"],
)
WEBHOOK_ATTEMPTS = Counter(
    "easel_webhook_attempts",
    "Webhook delivery attempts, by result: delivered, retry (will be tried again), "
    "given_up (the last attempt failed)",
    ["result"],
)
WEBHOOK_ENDPOINT_ATTEMPTS = Counter(
    "easel_webhook_endpoint_attempts",
    "Webhook delivery attempts by account, endpoint (scheme://host:port) and result: delivered, "
    "retry, given_up",
    ["account", "endpoint", "result"],
)
WEBHOOK_LATENCY = Histogram(
    "easel_webhook_delivery_latency_seconds",
    "From the status change a webhook reports to its receiver's 2xx, retries included, by "
    "account and endpoint",
    ["account", "endpoint"],
    buckets=WEBHOOK_LATENCY_BUCKETS,
)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a path no route matches (no raw paths as labels)


def shared_dir() -> Path | None:
    """The directory this process's metrics are written to; None: kept in memory."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(path) if path else None


def is_shared() -> bool:
    """Whether prometheus_client writes to the shared directory (chosen at its import)."""
    return values.ValueClass is not values.MutexValue


def require_shared(path: Path) -> None:
    """Fail loudly if this process was meant to share `path` but prometheus_client was imported
    before EASEL_METRICS_DIR was set (its metrics would be invisible to the others)."""
    if not is_shared() or shared_dir() != path:
        raise RuntimeError(
            f"metrics should be shared in {path}, but prometheus_client was imported before "
            "EASEL_METRICS_DIR was set; set it in the environment before Easel starts"
        )


def clear_dir(path: Path) -> None:
    """Start a fresh shared directory: drop the files of processes that no longer run."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def process_ended(pid: int) -> None:
    """A process of the shared directory exited: its live gauges no longer count (its counters
    and histograms do: totals never go down)."""
    path = shared_dir()
    if path is not None:
        multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def exposition(*extra: Collector) -> bytes:
    """Prometheus text: this process's metrics, or every process's of the shared directory,
    plus `extra` collectors (e.g. the scrape-time database figures). Reads files: call it off
    the event loop."""
    registry = CollectorRegistry(auto_describe=False)
    path = shared_dir()
    if path is not None:
        multiprocess.MultiProcessCollector(registry, str(path))  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forwarded(REGISTRY))
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)


class _Forwarded(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Any]:
        return self.registry.collect()


def token_matches(authorization: str, token: str) -> bool:
    """`Authorization: Bearer <token>` carries `token` (compared in constant time)."""
    scheme, _, given = authorization.partition(" ")
    given_bytes = given.strip().encode("utf-8", "surrogateescape")
    return scheme.lower() == "bearer" and hmac.compare_digest(given_bytes, token.encode())


def route_label(scope: Mapping[str, Any]) -> str:
    """The matched route's template (`/api/v1/status/{order_id}`), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


# Counted when the transaction that wrote them commits (a rolled-back end counts nothing).
_ON_COMMIT = "easel_metrics_on_commit"


def after_commit(session: AsyncSession, record: Callable[[], None]) -> None:
    """Run `record` once `session`'s transaction commits; forget it if it rolls back."""
    session.sync_session.info.setdefault(_ON_COMMIT, []).append(record)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    for record in session.info.pop(_ON_COMMIT, []):
        record()


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_ON_COMMIT, None)


def order_finished(
    session: AsyncSession, status: str, model: str, code: str = "", refunded: int = 0
) -> None:
    """Count an order's end, and its refund of `refunded` credits, when `session` commits."""

    def record() -> None:
        ORDERS_FINISHED.labels(status, model, code).inc()
        if refunded:
            REFUNDS.labels(status).inc()
            REFUNDED_CREDITS.labels(status).inc(refunded)

    after_commit(session, record)


def count_webhook_attempt(state: str) -> None:
    """An attempt, by the state it left its delivery in: delivered, pending (to be retried) or
    failed (given up)."""
    result = {"delivered": "delivered", "failed": "given_up"}.get(state, "retry")
    WEBHOOK_ATTEMPTS.labels(result=result).inc()


def webhook_endpoint_attempt(
    account: str, endpoint: str, state: str, latency: float | None = None
) -> None:
    """An attempt to one account's endpoint, by the state it left its delivery in (as
    `count_webhook_attempt`); `latency`: seconds from the status change to the 2xx, if
    delivered."""
    result = {"delivered": "delivered", "failed": "given_up"}.get(state, "retry")
    WEBHOOK_ENDPOINT_ATTEMPTS.labels(account, endpoint, result).inc()
    if latency is not None:
        WEBHOOK_LATENCY.labels(account, endpoint).observe(latency)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


class MetricsServer:
    """`easel worker --metrics-port` / `easel services --metrics-port`: this process's metrics
    (or its shared directory's) over HTTP in a thread, for hosts without an API process."""

    def __init__(self, host: str, port: int, token: str = "") -> None:
        self.token = token
        self._server = make_server(host, port, self._app, _Server, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-server", daemon=True
        )

    def _app(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        if self.token and not token_matches(environ.get("HTTP_AUTHORIZATION", ""), self.token):
            start_response("401 Unauthorized", [("WWW-Authenticate", "Bearer")])
            return iter([b"send Authorization: Bearer <EASEL_METRICS_TOKEN>\n"])
        start_response("200 OK", [("Content-Type", CONTENT_TYPE)])
        return iter([exposition()])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
