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

Claiming ahead (CLAIM_AHEAD_*, EASEL_WEBHOOK_CLAIM_AHEAD): a sender may also lease the next due
deliveries of an endpoint it is sending to without a slot (`reserved`). Only the sender's own
finished 2xx delivery hands its slot to one of them, so posts to an endpoint never outnumber its
slots; the hand-over is written when the finished one is recorded (`record`: the slot stays
taken, the reserved delivery now holds it). A reserved delivery not handed a slot is given back
(UNRESERVE); one whose lease runs out gives back no slot.

Services here never commit: the sender owns each transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, bindparam, column, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from easel.config import Settings
from easel.db.engine import is_postgresql
from easel.db.tables import DELIVERIES, ENDPOINTS, UTCDateTime, WebhookDelivery

# Leases that ran out (their sender died or stalled): the slot goes back to the endpoint and the
# delivery is due again. Walks ix_webhook_deliveries_lease. Both databases.
# Their endpoints are locked first, in id order, as `record` and the claim lock them.
EXPIRED_LEASE_ENDPOINTS = text(
    """
    SELECT DISTINCT endpoint_id FROM webhook_deliveries
    WHERE lease_until IS NOT NULL AND lease_until <= :now
    """
).bindparams(bindparam("now", type_=UTCDateTime))
LOCK_ENDPOINTS = text(
    "SELECT id FROM webhook_endpoints WHERE id IN :ids ORDER BY id FOR UPDATE"
).bindparams(bindparam("ids", expanding=True))
RELEASE_EXPIRED_LEASES = text(
    """
    UPDATE webhook_deliveries SET lease_until = NULL
    WHERE lease_until IS NOT NULL AND lease_until <= :now AND endpoint_id IN :ids
    RETURNING endpoint_id, reserved
    """
).bindparams(bindparam("now", type_=UTCDateTime), bindparam("ids", expanding=True))
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
# `chosen`: the earliest due of those, up to :room. Then the endpoints' slots and the leases,
# returning each delivery with its account's signing secret (no second read to sign it).
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
    UPDATE webhook_deliveries AS d
    SET lease_until = :lease_until, reserved = false, attempts = d.attempts + 1
    FROM chosen
    WHERE d.id = chosen.id
    RETURNING d.id, d.account_id, d.endpoint_id, d.order_id, d.url, d.event, d.attempts,
              d.next_attempt_at, d.created_at,
              (SELECT a.webhook_secret FROM accounts AS a WHERE a.id = d.account_id) AS secret
    """
).bindparams(bindparam("now", type_=UTCDateTime), bindparam("lease_until", type_=UTCDateTime))

# SQLite: the transaction began with BEGIN IMMEDIATE, so this runs alone (no locks to take). The
# same choice: each endpoint's first :per_endpoint due deliveries (one walk of
# ix_webhook_deliveries_endpoint_due per endpoint, however long its backlog), of which as many as
# it has room for, each with its account's signing secret; TAKE_SLOTS_SQLITE then counts the
# claimed deliveries into their endpoints (one executemany).
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
        FROM endpoint JOIN webhook_deliveries AS w ON w.id IN (
            SELECT d.id FROM webhook_deliveries AS d
            WHERE d.endpoint_id = endpoint.id AND d.state = 'pending'
              AND d.next_attempt_at <= :now AND d.lease_until IS NULL
            ORDER BY d.state, d.next_attempt_at, d.created_at, d.id
            LIMIT :per_endpoint)
    )
    UPDATE webhook_deliveries
    SET lease_until = :lease_until, reserved = false, attempts = attempts + 1
    WHERE id IN (
        SELECT ranked.id FROM ranked WHERE ranked.nth <= ranked.free
        ORDER BY ranked.next_attempt_at, ranked.created_at, ranked.id
        LIMIT :room
    )
    RETURNING id, account_id, endpoint_id, order_id, url, event, attempts, next_attempt_at,
              created_at,
              (SELECT a.webhook_secret FROM accounts AS a
               WHERE a.id = webhook_deliveries.account_id) AS secret
    """
).bindparams(bindparam("now", type_=UTCDateTime), bindparam("lease_until", type_=UTCDateTime))
TAKE_SLOTS_SQLITE = text(
    "UPDATE webhook_endpoints SET in_flight = in_flight + :count WHERE id = :endpoint_id"
)

# Claiming ahead, PostgreSQL: of the endpoints :ids (those the sender is sending to) the healthy
# ones (no failure in a row, not disabled), each's next :ahead due deliveries not leased, leased
# as reserved: no slot taken, no attempt counted yet. SKIP LOCKED: rows another sender is
# claiming are left to it. Same index walk as the claim.
CLAIM_AHEAD_POSTGRESQL = text(
    """
    WITH candidate AS (
        SELECT d.id
        FROM webhook_endpoints AS e CROSS JOIN LATERAL (
            SELECT w.id FROM webhook_deliveries AS w
            WHERE w.endpoint_id = e.id AND w.state = 'pending'
              AND w.next_attempt_at <= :now AND w.lease_until IS NULL
            ORDER BY w.state, w.next_attempt_at, w.created_at, w.id
            LIMIT :ahead
            FOR UPDATE OF w SKIP LOCKED
        ) AS d
        WHERE e.id IN :ids AND e.disabled_at IS NULL AND e.consecutive_failures = 0
          AND (e.retry_at IS NULL OR e.retry_at <= :now)
    )
    UPDATE webhook_deliveries AS d
    SET lease_until = :lease_until, reserved = true
    FROM candidate
    WHERE d.id = candidate.id
    RETURNING d.id, d.account_id, d.endpoint_id, d.order_id, d.url, d.event, d.attempts,
              d.next_attempt_at, d.created_at,
              (SELECT a.webhook_secret FROM accounts AS a WHERE a.id = d.account_id) AS secret
    """
).bindparams(
    bindparam("now", type_=UTCDateTime),
    bindparam("lease_until", type_=UTCDateTime),
    bindparam("ids", expanding=True),
)
# Claiming ahead, SQLite (alone in its BEGIN IMMEDIATE transaction): the same choice.
CLAIM_AHEAD_SQLITE = text(
    """
    UPDATE webhook_deliveries
    SET lease_until = :lease_until, reserved = 1
    WHERE id IN (
        SELECT w.id
        FROM webhook_endpoints AS e JOIN webhook_deliveries AS w ON w.id IN (
            SELECT d.id FROM webhook_deliveries AS d
            WHERE d.endpoint_id = e.id AND d.state = 'pending'
              AND d.next_attempt_at <= :now AND d.lease_until IS NULL
            ORDER BY d.state, d.next_attempt_at, d.created_at, d.id
            LIMIT :ahead)
        WHERE e.id IN :ids AND e.disabled_at IS NULL AND e.consecutive_failures = 0
          AND (e.retry_at IS NULL OR e.retry_at <= :now)
    )
    RETURNING id, account_id, endpoint_id, order_id, url, event, attempts, next_attempt_at,
              created_at,
              (SELECT a.webhook_secret FROM accounts AS a
               WHERE a.id = webhook_deliveries.account_id) AS secret
    """
).bindparams(
    bindparam("now", type_=UTCDateTime),
    bindparam("lease_until", type_=UTCDateTime),
    bindparam("ids", expanding=True),
)
# Reserved deliveries their sender gives back unsent (their endpoint failed, the sender stops,
# or a lease too short for an attempt): due again at once, in their place. One executemany, run
# by `record` with the rows already locked (endpoints first, then deliveries, each by id).
UNRESERVE = text(
    """
    UPDATE webhook_deliveries SET lease_until = NULL
    WHERE id = :b_id AND lease_until = :b_lease AND reserved
    """
).bindparams(bindparam("b_lease", type_=UTCDateTime))


def lease_for(settings: Settings) -> timedelta:
    """How long a claimed delivery is held: its whole attempt, with room to record the result."""
    return timedelta(seconds=2 * settings.webhook_timeout + settings.webhook_lease_margin)


async def release_expired(session: AsyncSession, now: datetime) -> int:
    """Give back the slots of leases that ran out; how many were released."""
    ids = sorted((await session.scalars(EXPIRED_LEASE_ENDPOINTS, {"now": now})).all())
    if not ids:
        return 0
    if is_postgresql(session):  # SQLite has one writer at a time
        await session.execute(LOCK_ENDPOINTS, {"ids": ids})
    rows = (await session.execute(RELEASE_EXPIRED_LEASES, {"now": now, "ids": ids})).all()
    counts: dict[str, int] = {}
    for row in rows:
        if not row.reserved:  # a reserved delivery held no slot
            counts[row.endpoint_id] = counts.get(row.endpoint_id, 0) + 1
    for endpoint, count in sorted(counts.items()):
        await session.execute(GIVE_BACK_SLOTS, {"endpoint_id": endpoint, "count": count})
    return len(rows)


@dataclass(frozen=True)
class Due:
    """A claimed delivery: what the sender needs to render, sign and send it."""

    id: str  # the webhook-id
    account_id: str
    endpoint_id: str
    order_id: str
    url: str
    event: str
    attempts: int  # this attempt's number
    next_attempt_at: datetime
    created_at: datetime
    lease_until: datetime
    secret: str = field(repr=False)  # its account's webhook secret, read with the claim
    reserved: bool = False  # leased ahead, without a slot (claim_ahead)


async def claim_due(
    session: AsyncSession, settings: Settings, room: int, now: datetime
) -> list[Due]:
    """Up to `room` deliveries by the claim rule above, leased to the caller, earliest due
    first."""
    if room < 1:
        return []
    lease_until = now + lease_for(settings)
    params: dict[str, Any] = {
        "now": now,
        "lease_until": lease_until,
        "room": room,
        "per_endpoint": settings.webhook_max_per_endpoint,
        "probe_after": settings.webhook_endpoint_failures,
    }
    statement = CLAIM_DUE_POSTGRESQL if is_postgresql(session) else CLAIM_DUE_SQLITE
    rows = (await session.execute(statement.columns(*DUE_COLUMNS), params)).all()
    if rows and not is_postgresql(session):
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.endpoint_id] = counts.get(row.endpoint_id, 0) + 1
        await session.execute(
            TAKE_SLOTS_SQLITE,
            [{"endpoint_id": endpoint, "count": count} for endpoint, count in counts.items()],
        )
    claimed = [
        Due(**{**row._mapping, "secret": row.secret or ""}, lease_until=lease_until) for row in rows
    ]
    return sorted(claimed, key=lambda d: (d.next_attempt_at, d.created_at, d.id))


async def claim_ahead(
    session: AsyncSession, settings: Settings, endpoint_ids: Collection[str], now: datetime
) -> list[Due]:
    """Up to EASEL_WEBHOOK_CLAIM_AHEAD more due deliveries of each of these endpoints (the
    healthy ones), leased as reserved: no slot taken, no attempt counted until one is handed a
    slot. Earliest due first."""
    if not endpoint_ids or settings.webhook_claim_ahead < 1:
        return []
    lease_until = now + lease_for(settings)
    params: dict[str, Any] = {
        "now": now,
        "lease_until": lease_until,
        "ahead": settings.webhook_claim_ahead,
        "ids": sorted(endpoint_ids),
    }
    statement = CLAIM_AHEAD_POSTGRESQL if is_postgresql(session) else CLAIM_AHEAD_SQLITE
    rows = (await session.execute(statement.columns(*DUE_COLUMNS), params)).all()
    claimed = [
        Due(
            **{**row._mapping, "secret": row.secret or "", "attempts": row.attempts + 1},
            lease_until=lease_until,
            reserved=True,
        )
        for row in rows
    ]
    return sorted(claimed, key=lambda d: (d.next_attempt_at, d.created_at, d.id))


DUE_COLUMNS = (
    WebhookDelivery.id,
    WebhookDelivery.account_id,
    WebhookDelivery.endpoint_id,
    WebhookDelivery.order_id,
    WebhookDelivery.url,
    WebhookDelivery.event,
    WebhookDelivery.attempts,
    WebhookDelivery.next_attempt_at,
    WebhookDelivery.created_at,
    column("secret", String),
)


@dataclass(frozen=True)
class Attempt:
    """One attempt's outcome, as the sender saw it."""

    delivery_id: str
    endpoint_id: str
    lease_until: datetime  # the lease it was sent under: a result for a lost lease is dropped
    status: int | None
    error: str | None
    endpoint_fault: bool  # the receiver failed (not, e.g., our rendering of the body)
    started_at: datetime
    duration_ms: int
    handed_to: Due | None = None  # the reserved delivery this one's slot went to when it ended


@dataclass(frozen=True)
class Recorded:
    """What recording an attempt did, for metrics and logs."""

    delivery_id: str
    order_id: str
    account_id: str
    origin: str  # its endpoint
    state: str  # delivered / pending (retried later) / failed (given up)
    status: int | None
    error: str | None
    duration_ms: int
    latency: float | None  # seconds from the status change to the 2xx, when delivered
    disabled_reason: str | None  # set when this attempt disabled the endpoint


def retry_delay(settings: Settings, attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt of one delivery."""
    return settings.webhook_retry_first * settings.webhook_retry_factor ** (max(attempts, 1) - 1)


def endpoint_delay(settings: Settings, failures: int) -> float:
    """Seconds an endpoint that failed `failures` times in a row waits before its next probe."""
    over = failures - settings.webhook_endpoint_failures
    delay = settings.webhook_retry_first * settings.webhook_retry_factor**over
    return float(min(delay, settings.webhook_endpoint_retry_max))


# One executemany each: the recorded attempts' deliveries, then their endpoints.
RECORD_DELIVERY = (
    DELIVERIES.update()
    .where(DELIVERIES.c.id == bindparam("b_id"))
    .values(
        lease_until=None,
        state=bindparam("b_state"),
        last_status=bindparam("b_status"),
        last_error=bindparam("b_error"),
        last_attempt_at=bindparam("b_attempted", type_=UTCDateTime),
        last_duration_ms=bindparam("b_duration"),
        attempts=bindparam("b_attempts"),
        reserved=False,
        delivered_at=bindparam("b_delivered", type_=UTCDateTime),
        next_attempt_at=bindparam("b_next", type_=UTCDateTime),
    )
)
ENDPOINT_FIELDS = (
    "in_flight",
    "consecutive_failures",
    "failing_since",
    "retry_at",
    "disabled_at",
    "disabled_reason",
    "last_success_at",
    "last_failure_at",
)
# A reserved delivery handed a finished one's slot: it holds the slot now, its attempt counted.
HAND_OVER = (
    DELIVERIES.update()
    .where(DELIVERIES.c.id == bindparam("b_id"))
    .values(reserved=False, attempts=bindparam("b_attempts"))
)
RECORD_ENDPOINT = (
    ENDPOINTS.update()
    .where(ENDPOINTS.c.id == bindparam("b_id"))
    .values(
        {name: bindparam(f"b_{name}", type_=ENDPOINTS.c[name].type) for name in ENDPOINT_FIELDS}
    )
)


async def record(
    session: AsyncSession,
    settings: Settings,
    attempts: Sequence[Attempt],
    now: datetime,
    give_back: Sequence[Due] = (),
) -> list[Recorded]:
    """Write the attempts' results, and their endpoints' health, in the caller's transaction.

    A success clears the endpoint's failure run. A receiver's failure extends it: from
    EASEL_WEBHOOK_ENDPOINT_FAILURES failures in a row the endpoint backs off as a whole, and a run
    older than EASEL_WEBHOOK_DISABLE_AFTER_DAYS disables it. Endpoints are locked before their
    deliveries, each in id order, as `endpoints.enable` and the claim lock them.

    An attempt `handed_to` a reserved delivery keeps its slot for that one, which now holds it; a
    delivery still reserved when recorded (its hand-over was not written) held no slot.

    `give_back`: reserved deliveries the sender did not send, due again in their place (UNRESERVE).
    Their endpoints and rows are locked with the attempts', in the same order.
    """
    if not attempts and not give_back:
        return []
    e = ENDPOINTS.c
    endpoint_ids = {a.endpoint_id for a in attempts} | {g.endpoint_id for g in give_back}
    endpoints: dict[str, dict[str, Any]] = {
        row.id: dict(row._mapping)
        for row in await session.execute(
            select(e.id, e.origin, *(e[name] for name in ENDPOINT_FIELDS))
            .where(e.id.in_(sorted(endpoint_ids)))
            .order_by(e.id)
            .with_for_update()
        )
    }
    d = DELIVERIES.c
    wanted = {a.delivery_id for a in attempts} | {a.handed_to.id for a in attempts if a.handed_to}
    wanted |= {g.id for g in give_back}
    held = {
        row.id: dict(row._mapping)
        for row in await session.execute(
            select(
                d.id,
                d.endpoint_id,
                d.account_id,
                d.order_id,
                d.attempts,
                d.lease_until,
                d.next_attempt_at,
                d.created_at,
                d.reserved,
            )
            .where(d.id.in_(sorted(wanted)))
            .order_by(d.id)
            .with_for_update()
        )
    }
    disable_after = timedelta(days=settings.webhook_disable_after_days)
    updates: list[dict[str, Any]] = []
    handed: list[dict[str, Any]] = []
    done: list[Recorded] = []
    for attempt in attempts:
        row = held.get(attempt.delivery_id)
        if (
            row is None
            or row["lease_until"] != attempt.lease_until
            or row["endpoint_id"] not in endpoints
        ):
            continue  # deleted, or its lease ran out and was released: it is sent again
        endpoint = endpoints[row["endpoint_id"]]
        if row["reserved"]:  # sent on a hand-over not written: it held no slot of its own
            row["reserved"] = False
            row["attempts"] += 1
        elif not _hand_over(attempt.handed_to, held, handed):
            endpoint["in_flight"] = max(endpoint["in_flight"] - 1, 0)
        state, delivered, next_at, latency, disabled = (
            "pending",
            None,
            row["next_attempt_at"],
            None,
            None,
        )
        if attempt.error is None:
            state, delivered = "delivered", now
            latency = max((now - row["created_at"]).total_seconds(), 0.0)
            endpoint.update(
                consecutive_failures=0, failing_since=None, retry_at=None, last_success_at=now
            )
        else:
            if row["attempts"] >= settings.webhook_max_attempts:
                state = "failed"
            else:
                next_at = now + timedelta(seconds=retry_delay(settings, row["attempts"]))
            if attempt.endpoint_fault:
                disabled = _endpoint_failed(settings, endpoint, attempt, now, disable_after)
        updates.append(
            {
                "b_id": row["id"],
                "b_state": state,
                "b_attempts": row["attempts"],
                "b_status": attempt.status,
                "b_error": attempt.error,
                "b_attempted": attempt.started_at,
                "b_duration": attempt.duration_ms,
                "b_delivered": delivered,
                "b_next": next_at,
            }
        )
        done.append(
            Recorded(
                row["id"],
                row["order_id"],
                row["account_id"],
                endpoint["origin"],
                state,
                attempt.status,
                attempt.error,
                attempt.duration_ms,
                latency,
                disabled,
            )
        )
    if handed:
        await session.execute(HAND_OVER, handed)
    if updates:
        recorded = {a.endpoint_id for a in attempts}
        await session.execute(
            RECORD_ENDPOINT,
            [
                {f"b_{k}": v for k, v in endpoint.items() if k != "origin"}
                for endpoint_id, endpoint in sorted(endpoints.items())
                if endpoint_id in recorded
            ],
        )
        await session.execute(RECORD_DELIVERY, sorted(updates, key=lambda u: str(u["b_id"])))
    if give_back:
        await session.execute(
            UNRESERVE,
            [
                {"b_id": g.id, "b_lease": g.lease_until}
                for g in sorted(give_back, key=lambda g: g.id)
            ],
        )
    return done


def _hand_over(
    to: Due | None, held: dict[str, dict[str, Any]], handed: list[dict[str, Any]]
) -> bool:
    """Give a finished delivery's slot to the reserved delivery `to`, if it is still held under
    the lease it was reserved with (its row changed in place); whether it took the slot."""
    row = held.get(to.id) if to is not None else None
    if to is None or row is None or not row["reserved"] or row["lease_until"] != to.lease_until:
        return False
    row["reserved"] = False
    row["attempts"] += 1
    handed.append({"b_id": to.id, "b_attempts": row["attempts"]})
    return True


def _endpoint_failed(
    settings: Settings,
    endpoint: dict[str, Any],
    attempt: Attempt,
    now: datetime,
    disable_after: timedelta,
) -> str | None:
    """Count a receiver's failure against its endpoint (a row's values, changed in place);
    the reason when this failure disables it."""
    endpoint["consecutive_failures"] += 1
    endpoint["last_failure_at"] = now
    if endpoint["failing_since"] is None:
        endpoint["failing_since"] = attempt.started_at
    failures = endpoint["consecutive_failures"]
    if failures >= settings.webhook_endpoint_failures:
        endpoint["retry_at"] = now + timedelta(seconds=endpoint_delay(settings, failures))
    if endpoint["disabled_at"] is None and now - endpoint["failing_since"] >= disable_after:
        since = endpoint["failing_since"].isoformat().replace("+00:00", "Z")
        reason = f"{failures} failed attempts in a row since {since}, the last: {attempt.error}"
        endpoint["disabled_at"] = now
        endpoint["disabled_reason"] = reason[:1000]
        return endpoint["disabled_reason"]  # type: ignore[no-any-return]
    return None
