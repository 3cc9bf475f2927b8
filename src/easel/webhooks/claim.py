"""The webhook outbox as a queue: every statement the senders run, named, in one place.

Which deliveries a sender takes (the claim rule):
1. only deliveries that are pending, due (`next_attempt_at`) and not held by a sender (no lease);
2. only to endpoints that are not disabled and not backing off (`retry_at` passed);
3. at most EASEL_WEBHOOK_MAX_PER_ENDPOINT in flight per endpoint over all senders, one (the probe)
   while the endpoint has failed EASEL_WEBHOOK_ENDPOINT_FAILURES times in a row;
4. of those, the earliest due first (then the oldest), up to the sender's free slots.
A claimed delivery carries a lease (`lease_until`) and counts in its endpoint's `in_flight` until
its result is recorded; a sender that died leaves leases that run out, and
RELEASE_EXPIRED_LEASES gives their slots back and makes the deliveries due again (at least once:
the same webhook-id may arrive twice).

Services here never commit: the sender owns each transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from easel.config import Settings
from easel.db.engine import is_postgresql
from easel.db.tables import UTCDateTime, WebhookDelivery, WebhookEndpoint

# Leases that ran out (their sender died or stalled): the slot goes back to the endpoint and the
# delivery is due again. Walks ix_webhook_deliveries_lease. Both databases.
RELEASE_EXPIRED_LEASES = text(
    """
    UPDATE webhook_deliveries SET lease_until = NULL
    WHERE lease_until IS NOT NULL AND lease_until <= :now
    RETURNING endpoint_id
    """
).bindparams(bindparam("now", type_=UTCDateTime))
GIVE_BACK_SLOTS = text(
    """
    UPDATE webhook_endpoints
    SET in_flight = CASE WHEN in_flight > :count THEN in_flight - :count ELSE 0 END
    WHERE id = :endpoint_id
    """
)

# PostgreSQL, one statement. `endpoint`: the endpoints with a due delivery, not disabled, not
# backing off and under their limit, locked (SKIP LOCKED: an endpoint another sender is claiming
# for is left to it this time). Locking makes PostgreSQL return each endpoint's newest row, so
# `in_flight` counts every claim committed before ours, and two senders never fill one endpoint
# past its limit. `candidate`: each endpoint's earliest due deliveries, as many as it has room
# for (one index walk of ix_webhook_deliveries_endpoint_due per endpoint, stopping at its limit);
# `chosen`: the earliest due of those, up to :room. Then the endpoints' slots and the leases.
CLAIM_DUE_POSTGRESQL = text(
    """
    WITH endpoint AS (
        SELECT e.id,
               CASE WHEN e.consecutive_failures >= :probe_after THEN 1 ELSE :per_endpoint END
                 - e.in_flight AS free
        FROM webhook_endpoints AS e
        WHERE e.disabled_at IS NULL AND (e.retry_at IS NULL OR e.retry_at <= :now)
          AND e.in_flight
              < CASE WHEN e.consecutive_failures >= :probe_after THEN 1 ELSE :per_endpoint END
          AND EXISTS (
              SELECT 1 FROM webhook_deliveries AS w
              WHERE w.endpoint_id = e.id AND w.state = 'pending' AND w.next_attempt_at <= :now
                AND w.lease_until IS NULL)
        FOR UPDATE OF e SKIP LOCKED
    ), candidate AS (
        SELECT d.id, d.endpoint_id, d.next_attempt_at, d.created_at
        FROM endpoint CROSS JOIN LATERAL (
            SELECT w.id, w.endpoint_id, w.next_attempt_at, w.created_at
            FROM webhook_deliveries AS w
            WHERE w.endpoint_id = endpoint.id AND w.state = 'pending'
              AND w.next_attempt_at <= :now AND w.lease_until IS NULL
            ORDER BY w.state, w.next_attempt_at, w.created_at, w.id
            LIMIT endpoint.free
            FOR UPDATE OF w SKIP LOCKED
        ) AS d
    ), chosen AS (
        SELECT candidate.id, candidate.endpoint_id FROM candidate
        ORDER BY candidate.next_attempt_at, candidate.created_at, candidate.id
        LIMIT :room
    ), slot AS (
        UPDATE webhook_endpoints SET in_flight = webhook_endpoints.in_flight + taken.count
        FROM (SELECT endpoint_id, COUNT(*) AS count FROM chosen GROUP BY endpoint_id) AS taken
        WHERE webhook_endpoints.id = taken.endpoint_id
        RETURNING webhook_endpoints.id
    )
    UPDATE webhook_deliveries
    SET lease_until = :lease_until, attempts = webhook_deliveries.attempts + 1
    FROM chosen
    WHERE webhook_deliveries.id = chosen.id
    RETURNING webhook_deliveries.id
    """
).bindparams(bindparam("now", type_=UTCDateTime), bindparam("lease_until", type_=UTCDateTime))

# SQLite: the transaction began with BEGIN IMMEDIATE, so this runs alone (no locks to take). The
# same choice; TAKE_SLOTS_SQLITE then counts the claimed deliveries into their endpoints.
CLAIM_DUE_SQLITE = text(
    """
    WITH endpoint AS (
        SELECT e.id,
               CASE WHEN e.consecutive_failures >= :probe_after THEN 1 ELSE :per_endpoint END
                 - e.in_flight AS free
        FROM webhook_endpoints AS e
        WHERE e.disabled_at IS NULL AND (e.retry_at IS NULL OR e.retry_at <= :now)
          AND e.in_flight
              < CASE WHEN e.consecutive_failures >= :probe_after THEN 1 ELSE :per_endpoint END
    ), ranked AS (
        SELECT w.id, w.next_attempt_at, w.created_at, endpoint.free,
               ROW_NUMBER() OVER (
                   PARTITION BY w.endpoint_id ORDER BY w.next_attempt_at, w.created_at, w.id
               ) AS nth
        FROM endpoint JOIN webhook_deliveries AS w ON w.endpoint_id = endpoint.id
        WHERE w.state = 'pending' AND w.next_attempt_at <= :now AND w.lease_until IS NULL
    )
    UPDATE webhook_deliveries
    SET lease_until = :lease_until, attempts = attempts + 1
    WHERE id IN (
        SELECT ranked.id FROM ranked WHERE ranked.nth <= ranked.free
        ORDER BY ranked.next_attempt_at, ranked.created_at, ranked.id
        LIMIT :room
    )
    RETURNING id, endpoint_id
    """
).bindparams(bindparam("now", type_=UTCDateTime), bindparam("lease_until", type_=UTCDateTime))
TAKE_SLOTS_SQLITE = text(
    "UPDATE webhook_endpoints SET in_flight = in_flight + :count WHERE id = :endpoint_id"
)


def lease_for(settings: Settings) -> timedelta:
    """How long a claimed delivery is held: its whole attempt, with room to record the result."""
    return timedelta(seconds=2 * settings.webhook_timeout + 30)


async def release_expired(session: AsyncSession, now: datetime) -> int:
    """Give back the slots of leases that ran out; how many were released."""
    rows = (await session.execute(RELEASE_EXPIRED_LEASES, {"now": now})).all()
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.endpoint_id] = counts.get(row.endpoint_id, 0) + 1
    for endpoint, count in sorted(counts.items()):
        await session.execute(GIVE_BACK_SLOTS, {"endpoint_id": endpoint, "count": count})
    return len(rows)


async def claim_due(
    session: AsyncSession, settings: Settings, room: int, now: datetime
) -> list[WebhookDelivery]:
    """Up to `room` deliveries by the claim rule above, leased to the caller, earliest due
    first."""
    if room < 1:
        return []
    params: dict[str, Any] = {
        "now": now,
        "lease_until": now + lease_for(settings),
        "room": room,
        "per_endpoint": settings.webhook_max_per_endpoint,
        "probe_after": settings.webhook_endpoint_failures,
    }
    if is_postgresql(session):
        ids = list((await session.scalars(CLAIM_DUE_POSTGRESQL, params)).all())
    else:
        rows = (await session.execute(CLAIM_DUE_SQLITE, params)).all()
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.endpoint_id] = counts.get(row.endpoint_id, 0) + 1
        for endpoint, count in counts.items():
            await session.execute(TAKE_SLOTS_SQLITE, {"endpoint_id": endpoint, "count": count})
        ids = [row.id for row in rows]
    if not ids:
        return []
    claimed = await session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.id.in_(ids))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.created_at, WebhookDelivery.id)
        .execution_options(populate_existing=True)
    )
    return list(claimed)


@dataclass(frozen=True)
class Attempt:
    """One attempt's outcome, as the sender saw it."""

    delivery_id: str
    lease_until: datetime  # the lease it was sent under: a result for a lost lease is dropped
    status: int | None
    error: str | None
    endpoint_fault: bool  # the receiver failed (not, e.g., our rendering of the body)
    started_at: datetime
    duration_ms: int


@dataclass(frozen=True)
class Recorded:
    """What recording an attempt did, for metrics and logs."""

    delivery: WebhookDelivery
    endpoint: WebhookEndpoint
    state: str  # delivered / pending (retried later) / failed (given up)
    latency: float | None  # seconds from the status change to the 2xx, when delivered
    disabled: bool  # this attempt disabled the endpoint


def retry_delay(settings: Settings, attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt of one delivery."""
    return settings.webhook_retry_first * settings.webhook_retry_factor ** (max(attempts, 1) - 1)


def endpoint_delay(settings: Settings, failures: int) -> float:
    """Seconds an endpoint that failed `failures` times in a row waits before its next probe."""
    over = failures - settings.webhook_endpoint_failures
    delay = settings.webhook_retry_first * settings.webhook_retry_factor**over
    return float(min(delay, settings.webhook_endpoint_retry_max))


async def record(
    session: AsyncSession, settings: Settings, attempts: Sequence[Attempt], now: datetime
) -> list[Recorded]:
    """Write the attempts' results, and their endpoints' health, in the caller's transaction.

    A success clears the endpoint's failure run. A receiver's failure extends it: from
    EASEL_WEBHOOK_ENDPOINT_FAILURES failures in a row the endpoint backs off as a whole, and a run
    older than EASEL_WEBHOOK_DISABLE_AFTER_DAYS disables it.
    """
    if not attempts:
        return []
    deliveries = {
        row.id: row
        for row in await session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.id.in_([a.delivery_id for a in attempts]))
            .order_by(WebhookDelivery.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }
    endpoints = {
        row.id: row
        for row in await session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.id.in_({d.endpoint_id for d in deliveries.values()}))
            .order_by(WebhookEndpoint.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }
    disable_after = timedelta(days=settings.webhook_disable_after_days)
    done: list[Recorded] = []
    for attempt in attempts:
        row = deliveries.get(attempt.delivery_id)
        if row is None or row.lease_until != attempt.lease_until:
            continue  # deleted, or its lease ran out and was released: it is sent again
        endpoint = endpoints[row.endpoint_id]
        endpoint.in_flight = max(endpoint.in_flight - 1, 0)
        row.lease_until = None
        row.last_status = attempt.status
        row.last_error = attempt.error
        row.last_attempt_at = attempt.started_at
        row.last_duration_ms = attempt.duration_ms
        latency = None
        disabled = False
        if attempt.error is None:
            row.state = "delivered"
            row.delivered_at = now
            latency = max((now - row.created_at).total_seconds(), 0.0)
            endpoint.consecutive_failures = 0
            endpoint.failing_since = None
            endpoint.retry_at = None
            endpoint.last_success_at = now
        else:
            if row.attempts >= settings.webhook_max_attempts:
                row.state = "failed"
            else:
                row.next_attempt_at = now + timedelta(seconds=retry_delay(settings, row.attempts))
            if attempt.endpoint_fault:
                disabled = _endpoint_failed(settings, endpoint, attempt, now, disable_after)
        done.append(Recorded(row, endpoint, row.state, latency, disabled))
    await session.flush()
    return done


def _endpoint_failed(
    settings: Settings,
    endpoint: WebhookEndpoint,
    attempt: Attempt,
    now: datetime,
    disable_after: timedelta,
) -> bool:
    """Count a receiver's failure against its endpoint; True when this one disables it."""
    endpoint.consecutive_failures += 1
    endpoint.last_failure_at = now
    if endpoint.failing_since is None:
        endpoint.failing_since = attempt.started_at
    if endpoint.consecutive_failures >= settings.webhook_endpoint_failures:
        delay = endpoint_delay(settings, endpoint.consecutive_failures)
        endpoint.retry_at = now + timedelta(seconds=delay)
    if endpoint.disabled_at is None and now - endpoint.failing_since >= disable_after:
        endpoint.disabled_at = now
        endpoint.disabled_reason = (
            f"{endpoint.consecutive_failures} failed attempts in a row since "
            f"{endpoint.failing_since.isoformat().replace('+00:00', 'Z')}, the last: "
            f"{attempt.error}"
        )[:1000]
        return True
    return False
