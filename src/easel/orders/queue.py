"""The queue is the `orders` table. Claim, lease renewal and reaping are named statements here.

Which order a worker takes next (the claim rule):
1. plan priority first, always: a higher-priority pending order is taken before any other;
2. within one priority, accounts take turns: each order carries a `fair_seq` (start-time fair
   queuing, weighted by images: see `fair_seq`), so one account's burst of a thousand orders
   does not delay another account's next order by more than a turn;
3. an order for a model the worker already holds in memory may go before the head of that fair
   order, so a worker does not swap pipelines while work for its loaded ones waits; a head passed
   over this way for longer than EASEL_PREFER_LOADED_SECONDS is taken first, so none starves;
4. then the oldest first.
The claim walks `ix_orders_fair` (status, priority DESC, fair_seq, created_at) from its start, and
`ix_orders_model_fair` once per loaded or served model: a few index probes whatever the queue's
length. A worker started with `--models` only sees orders for those models. After taking one
order (the leader) it may take compatible followers into the same pipeline call
(`claim_followers`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnClause,
    Executable,
    String,
    and_,
    bindparam,
    column,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from easel.db.engine import NOTIFY_CHANNEL, is_postgresql
from easel.db.status import OrderStatus
from easel.db.tables import ORDERS, Account, Order, UTCDateTime

log = logging.getLogger(__name__)

# Image-to-image strength an order without one runs at (the backends' Job default).
DEFAULT_STRENGTH = 0.8

# The fair order's clock at a priority: the head of its pending orders, else the newest running
# one, else (an idle priority) the furthest any account has gone.
FAIR_CLOCK = text(
    """
    SELECT COALESCE(
        (SELECT fair_seq FROM orders WHERE status = 'pending' AND priority = :priority
         ORDER BY priority DESC, fair_seq, created_at LIMIT 1),
        (SELECT fair_seq FROM orders WHERE status = 'running' AND priority = :priority
         ORDER BY priority DESC, fair_seq DESC, created_at DESC LIMIT 1),
        (SELECT MAX(queue_seq) FROM accounts),
        0)
    """
)

# Highest priority first, then the fair order, among accounts under their running cap; each
# probe is one index walk that stops at its first row (`head`: every model, when :models is
# NULL; `probed`: each of :probe, the worker's models when it serves some only, else its loaded
# ones; the loaded ones are among the served). Of those heads, the highest
# priority wins, then one the worker holds loaded or that was passed over since
# :passed_over_since, then fair_seq. PostgreSQL: order rows another claimer holds are skipped;
# the account row is only taken by the `slot` UPDATE, which waits for it and re-checks the cap
# on its newest version, so concurrent claimers keep the cap, and a claim holds at most one
# account lock (no lock-order deadlocks). When the cap filled up between the snapshot and the
# slot, `candidate_id` comes back without `claimed_id`: try again.
CLAIM_NEXT_POSTGRESQL_SQL = """
    WITH head AS (
        SELECT o.id, o.account_id, o.priority, o.fair_seq, o.created_at, o.model
        FROM orders AS o JOIN accounts AS a ON a.id = o.account_id
        WHERE CAST(:models AS text[]) IS NULL
          AND o.status = 'pending' AND a.running_count < a.max_running
        ORDER BY o.priority DESC, o.fair_seq, o.created_at
        LIMIT 1
        FOR UPDATE OF o SKIP LOCKED
    ), probed AS (
        SELECT h.* FROM unnest(CAST(:probe AS text[])) AS m(model) CROSS JOIN LATERAL (
            SELECT o.id, o.account_id, o.priority, o.fair_seq, o.created_at, o.model
            FROM orders AS o JOIN accounts AS a ON a.id = o.account_id
            WHERE o.status = 'pending' AND o.model = m.model
              AND a.running_count < a.max_running
            ORDER BY o.priority DESC, o.fair_seq, o.created_at
            LIMIT 1
            FOR UPDATE OF o SKIP LOCKED
        ) AS h
    ), candidate AS (
        SELECT heads.id, heads.account_id
        FROM (SELECT * FROM head UNION ALL SELECT * FROM probed) AS heads
        ORDER BY heads.priority DESC,
                 CASE WHEN heads.model = ANY(CAST(:loaded AS text[]))
                        OR heads.created_at < :passed_over_since THEN 0 ELSE 1 END,
                 heads.fair_seq, heads.created_at, heads.id
        LIMIT 1
    ), slot AS (
        UPDATE accounts SET running_count = accounts.running_count + 1
        WHERE accounts.id = {account}
          AND accounts.running_count < accounts.max_running
        RETURNING accounts.id, accounts.plan
    ), claimed AS (
        UPDATE orders
        SET status = 'running', worker_id = :worker_id, lease_until = :lease_until,
            started_at = COALESCE(orders.started_at, :now), attempts = orders.attempts + 1
        FROM candidate, slot
        WHERE orders.id = candidate.id
        RETURNING {returning}, slot.plan AS claimed_plan
    )
    SELECT {selected}, claimed.claimed_plan, candidate.id AS candidate_id
    FROM candidate LEFT JOIN claimed ON true
    """
# The slot's account: the candidate's, waiting for its lock (the leader's claim); or only when no
# other transaction holds it (`wait=False`: a claim taking more orders in a transaction that
# already holds an account lock must not wait for another, or two such claims could deadlock).
CLAIM_BINDS = (
    bindparam("lease_until", type_=UTCDateTime),
    bindparam("now", type_=UTCDateTime),
    bindparam("passed_over_since", type_=UTCDateTime),
)
# The claimed order comes back whole, with its account's plan, as an Order (no read after it).
# On SQLite its change_seq is the one from before the claim (RETURNING runs before the trigger
# that stamps it); nothing reads a claimed order's change_seq.
CLAIMED_PLAN = column("claimed_plan", String)
CANDIDATE_ID = column("candidate_id", String)


def _claimed_orders(sql: str, *extra: ColumnClause[Any]) -> Executable:
    columns = [*ORDERS.c, CLAIMED_PLAN, *extra]
    textual = text(sql).bindparams(*CLAIM_BINDS).columns(*columns)
    return select(Order, CLAIMED_PLAN, *extra).from_statement(textual)


def _postgresql_claim(account: str) -> Executable:
    sql = CLAIM_NEXT_POSTGRESQL_SQL.format(
        account=account,
        returning=", ".join(f"orders.{c.name}" for c in ORDERS.c),
        selected=", ".join(f"claimed.{c.name}" for c in ORDERS.c),
    )
    return _claimed_orders(sql, CANDIDATE_ID)


CLAIM_NEXT_POSTGRESQL = _postgresql_claim("(SELECT account_id FROM candidate)")
CLAIM_NEXT_POSTGRESQL_NOWAIT = _postgresql_claim(
    "(SELECT locked.id FROM accounts AS locked"
    " WHERE locked.id = (SELECT account_id FROM candidate) FOR UPDATE SKIP LOCKED)"
)

# SQLite: the transaction began with BEGIN IMMEDIATE, so this pair runs alone. The same probes
# as above; :models and :loaded are JSON arrays (:models NULL serves every model).
CLAIM_NEXT_SQLITE_SQL = """
    UPDATE orders
    SET status = 'running', worker_id = :worker_id, lease_until = :lease_until,
        started_at = COALESCE(started_at, :now), attempts = attempts + 1
    WHERE id = (
        SELECT heads.id FROM orders AS heads
        WHERE heads.id IN (
            SELECT * FROM (
                SELECT o.id FROM orders AS o JOIN accounts AS a ON a.id = o.account_id
                WHERE :models IS NULL AND o.status = 'pending'
                  AND a.running_count < a.max_running
                ORDER BY o.priority DESC, o.fair_seq, o.created_at
                LIMIT 1)
            UNION ALL
            SELECT (
                SELECT o.id FROM orders AS o JOIN accounts AS a ON a.id = o.account_id
                WHERE o.status = 'pending' AND o.model = m.value
                  AND a.running_count < a.max_running
                ORDER BY o.priority DESC, o.fair_seq, o.created_at
                LIMIT 1)
            FROM (SELECT value FROM json_each(COALESCE(:models, '[]'))
                  UNION SELECT value FROM json_each(:loaded)) AS m
        )
        ORDER BY heads.priority DESC,
                 CASE WHEN heads.model IN (SELECT value FROM json_each(:loaded))
                        OR heads.created_at < :passed_over_since THEN 0 ELSE 1 END,
                 heads.fair_seq, heads.created_at, heads.id
        LIMIT 1
    )
    RETURNING {returning},
        (SELECT plan FROM accounts WHERE accounts.id = orders.account_id) AS claimed_plan
    """
CLAIM_NEXT_SQLITE = _claimed_orders(
    CLAIM_NEXT_SQLITE_SQL.format(returning=", ".join(c.name for c in ORDERS.c))
)
TAKE_SLOT_SQLITE = text(
    "UPDATE accounts SET running_count = running_count + 1 WHERE id = :account_id"
)
CLAIM_RACE_RETRIES = 5

# Followers of a claimed leader: pending orders that can share its pipeline call (same model,
# size, steps, guidance, acceleration, frames, output format and LoRA set; all text-to-image, or
# all image-to-image from one image at the same strength, no mask), in claim order, at most :room
# images in all, and no account past its running cap. Taken as a prefix: the first one that does
# not fit ends the batch.
# PostgreSQL: order rows another claimer holds are skipped, and so are accounts another claimer
# holds (their candidates wait for a later batch): this statement never waits, so it cannot close
# a deadlock cycle with leader claims and other batches (one was seen in CI with waiting account
# locks). The accounts it takes are locked in id order and their newest running counts decide.
CLAIM_FOLLOWERS_POSTGRESQL = text(
    """
    WITH candidate AS (
        SELECT o.id, o.account_id, o.n, o.priority, o.fair_seq, o.created_at
        FROM orders AS o JOIN accounts AS a ON a.id = o.account_id
        WHERE o.status = 'pending' AND a.running_count < a.max_running
          AND o.model = :model AND o.width = :width AND o.height = :height
          AND o.steps = :steps AND o.guidance = :guidance AND o.acceleration = :acceleration
          AND o.frames = :frames AND o.output_format = :output_format
          AND o.loras = :loras AND o.inputs = ''
          AND (o.reference_key IS NOT NULL) = :with_reference
          AND (NOT :with_reference OR COALESCE(o.strength, :default_strength) = :strength)
          AND o.n <= :room
        ORDER BY o.priority DESC, o.fair_seq, o.created_at, o.id
        LIMIT :room
        FOR UPDATE OF o SKIP LOCKED
    ), account AS (
        SELECT accounts.id, accounts.max_running - accounts.running_count AS free
        FROM accounts
        WHERE accounts.id IN (SELECT account_id FROM candidate)
        ORDER BY accounts.id
        FOR UPDATE SKIP LOCKED
    ), ranked AS (
        SELECT c.id, c.account_id, c.n, c.priority, c.fair_seq, c.created_at, account.free,
               ROW_NUMBER() OVER (
                   PARTITION BY c.account_id
                   ORDER BY c.priority DESC, c.fair_seq, c.created_at, c.id
               ) AS nth
        FROM candidate AS c JOIN account ON account.id = c.account_id
    ), chosen AS (
        SELECT fitting.id, fitting.account_id
        FROM (
            SELECT r.id, r.account_id,
                   SUM(r.n) OVER (
                       ORDER BY r.priority DESC, r.fair_seq, r.created_at, r.id
                   ) AS images
            FROM ranked AS r
            WHERE r.nth <= r.free
        ) AS fitting
        WHERE fitting.images <= :room
    ), slot AS (
        UPDATE accounts SET running_count = accounts.running_count + taken.count
        FROM (SELECT account_id, COUNT(*) AS count FROM chosen GROUP BY account_id) AS taken
        WHERE accounts.id = taken.account_id
        RETURNING accounts.id
    ), claimed AS (
        UPDATE orders
        SET status = 'running', worker_id = :worker_id, lease_until = :lease_until,
            started_at = COALESCE(orders.started_at, :now), attempts = orders.attempts + 1
        FROM chosen JOIN slot ON slot.id = chosen.account_id
        WHERE orders.id = chosen.id
        RETURNING orders.id
    )
    SELECT id FROM claimed
    """
).bindparams(bindparam("lease_until", type_=UTCDateTime), bindparam("now", type_=UTCDateTime))

# SQLite: the same choice in one UPDATE (BEGIN IMMEDIATE: it runs alone); TAKE_SLOT_SQLITE then
# takes one running slot per claimed order.
CLAIM_FOLLOWERS_SQLITE = text(
    """
    UPDATE orders
    SET status = 'running', worker_id = :worker_id, lease_until = :lease_until,
        started_at = COALESCE(started_at, :now), attempts = attempts + 1
    WHERE id IN (
        SELECT fitting.id FROM (
            SELECT r.id, SUM(r.n) OVER (
                       ORDER BY r.priority DESC, r.fair_seq, r.created_at, r.id
                   ) AS images
            FROM (
                SELECT c.id, c.n, c.priority, c.fair_seq, c.created_at,
                       a.max_running - a.running_count AS free,
                       ROW_NUMBER() OVER (
                           PARTITION BY c.account_id
                           ORDER BY c.priority DESC, c.fair_seq, c.created_at, c.id
                       ) AS nth
                FROM (
                    SELECT o.id, o.account_id, o.n, o.priority, o.fair_seq, o.created_at
                    FROM orders AS o JOIN accounts AS a ON a.id = o.account_id
                    WHERE o.status = 'pending' AND a.running_count < a.max_running
                      AND o.model = :model AND o.width = :width AND o.height = :height
                      AND o.steps = :steps AND o.guidance = :guidance
                      AND o.acceleration = :acceleration AND o.frames = :frames
                      AND o.output_format = :output_format AND o.loras = :loras
                      AND o.inputs = ''
                      AND (o.reference_key IS NOT NULL) = :with_reference
                      AND (NOT :with_reference
                           OR COALESCE(o.strength, :default_strength) = :strength)
                      AND o.n <= :room
                    ORDER BY o.priority DESC, o.fair_seq, o.created_at, o.id
                    LIMIT :room
                ) AS c JOIN accounts AS a ON a.id = c.account_id
            ) AS r
            WHERE r.nth <= r.free
        ) AS fitting
        WHERE fitting.images <= :room
    )
    RETURNING id, account_id
    """
).bindparams(bindparam("lease_until", type_=UTCDateTime), bindparam("now", type_=UTCDateTime))


def strength(order: Order) -> float:
    return DEFAULT_STRENGTH if order.strength is None else float(order.strength)


async def claim_next(
    session: AsyncSession,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    *,
    models: Sequence[str] | None = None,
    loaded: Sequence[str] = (),
    prefer_loaded_for: timedelta = timedelta(0),
) -> Order | None:
    """The next order by the claim rule above, running for `worker_id`; None when none is due.

    `models`: only these catalog ids (None: any). `loaded`: the models the worker holds.
    """
    claimed = await claim_one(
        session,
        worker_id,
        now,
        lease,
        models=models,
        loaded=loaded,
        prefer_loaded_for=prefer_loaded_for,
    )
    return None if claimed is None else claimed[0]


async def claim_one(
    session: AsyncSession,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    *,
    models: Sequence[str] | None = None,
    loaded: Sequence[str] = (),
    prefer_loaded_for: timedelta = timedelta(0),
    wait: bool = True,
) -> tuple[Order, str] | None:
    """`claim_next`'s order, as the claim's own statement returned it, and its account's plan.
    `wait=False` (PostgreSQL): None rather than wait for the account's lock another
    transaction holds (a further claim in a transaction that holds one already)."""
    params: dict[str, Any] = {
        "worker_id": worker_id,
        "lease_until": now + lease,
        "now": now,
        "passed_over_since": now - prefer_loaded_for,
    }
    if models is not None:
        loaded = [m for m in loaded if m in models]
    fresh = {"populate_existing": True}
    if is_postgresql(session):
        params |= {
            "models": None if models is None else list(models),
            "loaded": list(loaded),
            "probe": list(loaded) if models is None else list(models),
        }
        statement = CLAIM_NEXT_POSTGRESQL if wait else CLAIM_NEXT_POSTGRESQL_NOWAIT
        for _ in range(CLAIM_RACE_RETRIES if wait else 1):
            row = (await session.execute(statement, params, execution_options=fresh)).first()
            if row is None:
                return None
            order, plan, _candidate = row
            if order is not None:
                return order, plan or ""
        return None
    params |= {
        "models": None if models is None else json.dumps(list(models)),
        "loaded": json.dumps(list(loaded)),
    }
    row = (await session.execute(CLAIM_NEXT_SQLITE, params, execution_options=fresh)).first()
    if row is None:
        return None
    order, plan = row
    await session.execute(TAKE_SLOT_SQLITE, {"account_id": order.account_id})
    return order, plan or ""


async def claim_followers(
    session: AsyncSession,
    leader: Order,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    room: int,
) -> list[Order]:
    """Pending orders compatible with `leader`, at most `room` images, running for `worker_id`.

    Run it in a transaction of its own after the leader's claim has committed.
    """
    if room < 1 or leader.inputs:  # an edit of several images or an inpainting runs alone
        return []
    params: dict[str, Any] = {
        "worker_id": worker_id,
        "lease_until": now + lease,
        "now": now,
        "room": room,
        "model": leader.model,
        "width": leader.width,
        "height": leader.height,
        "steps": leader.steps,
        "guidance": leader.guidance,
        "acceleration": leader.acceleration,
        "frames": leader.frames or 0,
        "output_format": leader.output_format,
        "loras": leader.loras,
        "with_reference": leader.reference_key is not None,
        "strength": strength(leader),
        "default_strength": DEFAULT_STRENGTH,
    }
    if is_postgresql(session):
        ids = list((await session.scalars(CLAIM_FOLLOWERS_POSTGRESQL, params)).all())
    else:
        rows = (await session.execute(CLAIM_FOLLOWERS_SQLITE, params)).all()
        for row in rows:
            await session.execute(TAKE_SLOT_SQLITE, {"account_id": row.account_id})
        ids = [row.id for row in rows]
    if not ids:
        return []
    orders = await session.scalars(
        select(Order)
        .where(Order.id.in_(ids))
        .order_by(Order.priority.desc(), Order.fair_seq, Order.created_at, Order.id)
        .execution_options(populate_existing=True)
    )
    return list(orders)


async def renew_leases(
    session: AsyncSession,
    order_ids: Sequence[str],
    worker_id: str,
    now: datetime,
    lease: timedelta,
    **progress: Any,
) -> dict[str, bool]:
    """Extend the leases (and record progress) of the orders `worker_id` still holds.

    Returns each held order's cancel_requested; an order missing from it was lost.
    """
    if not order_ids:
        return {}
    result = await session.execute(
        update(Order)
        .where(
            Order.id.in_(list(order_ids)),
            Order.worker_id == worker_id,
            Order.status == OrderStatus.RUNNING,
        )
        .values(lease_until=now + lease, **progress)
        .returning(Order.id, Order.cancel_requested)
    )
    return {row.id: bool(row.cancel_requested) for row in result}


async def expired_leases(session: AsyncSession, now: datetime, limit: int = 100) -> list[Order]:
    query = (
        select(Order)
        .where(Order.status == OrderStatus.RUNNING, Order.lease_until < now)
        .order_by(Order.lease_until)
        .limit(limit)
    )
    if is_postgresql(session):
        query = query.with_for_update(skip_locked=True)
    return list(await session.scalars(query))


async def fair_seq(session: AsyncSession, account: Account, priority: int, images: int) -> int:
    """Where a new order of `account` goes in the fair order of its priority (start-time fair
    queuing): at the account's own finish (its previous orders' images) or at the queue's clock,
    whichever is later. An account that sent a burst waits behind its own burst, while one that
    sends a single order is next in line after the head. Call it with the account row locked."""
    clock = int(await session.scalar(FAIR_CLOCK, {"priority": priority}) or 0)
    start = max(clock, account.queue_seq)
    account.queue_seq = start + max(1, images)
    return start


async def queue_position(session: AsyncSession, order: Order) -> int:
    """1 for the next order to run (by priority and the fair order; loaded-model preference and
    running caps may move it)."""
    ahead = await session.scalar(
        select(func.count())
        .select_from(Order)
        .where(
            Order.status == OrderStatus.PENDING,
            or_(
                Order.priority > order.priority,
                and_(
                    Order.priority == order.priority,
                    or_(
                        Order.fair_seq < order.fair_seq,
                        and_(
                            Order.fair_seq == order.fair_seq,
                            Order.created_at < order.created_at,
                        ),
                    ),
                ),
            ),
        )
    )
    return int(ahead or 0) + 1


async def queue_positions(session: AsyncSession, order_ids: Sequence[str]) -> dict[str, int]:
    """`queue_position` of each of `order_ids` still pending, in one statement: one walk of
    `ix_orders_fair` over the pending orders, whatever the number of ids (the change feed)."""
    if not order_ids:
        return {}
    ranked = (
        select(
            Order.id,
            func.rank()
            .over(order_by=(Order.priority.desc(), Order.fair_seq, Order.created_at))
            .label("position"),
        )
        .where(Order.status == OrderStatus.PENDING)
        .subquery()
    )
    rows = await session.execute(
        select(ranked.c.id, ranked.c.position).where(ranked.c.id.in_(list(order_ids)))
    )
    return {row.id: int(row.position) for row in rows}


async def notify_new_order(session: AsyncSession) -> None:
    """Wake idle PostgreSQL workers when this transaction commits."""
    if is_postgresql(session):
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})


async def listen_for_orders(dsn: str, wake: Callable[[], None], stop: asyncio.Event) -> None:
    """Hold a LISTEN connection until `stop`; call `wake` on each notification."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.add_listener(NOTIFY_CHANNEL, lambda *_: wake())
        await stop.wait()
    finally:
        await conn.close()
