"""The worker's group commit: writes queued together share one transaction, and one write's
failure (a lost lease, a database error) reaches only its own caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.engine import Database
from easel.db.tables import Account, Order, OrderAttempt, Output
from easel.orders import lifecycle, queue
from easel.orders.attempts import NewAttempt
from easel.worker.attempt_log import AttemptBegin
from easel.worker.completions import OrderDone
from easel.worker.group_commit import GroupCommit
from tests.support.app import new_account
from tests.support.catalogs import with_caps
from tests.support.orders import submit_order

pytestmark = pytest.mark.anyio

Write = Callable[[AsyncSession], Awaitable[Order | None]]


@pytest.fixture
async def state(settings: Settings, tmp_path: Path) -> AsyncIterator[AppState]:
    """An app state whose plans let 100 orders run at once."""
    state = AppState.build(with_caps(settings, tmp_path, 100))
    try:
        yield state
    finally:
        await state.db.dispose()


async def running_orders(state: AppState, count: int) -> list[str]:
    """`count` orders, each claimed by worker w1."""
    account, _ = await new_account(state, "mega", topup=10_000)
    ids = [await submit_order(state, account, "turbo", prompt=f"p{i}") for i in range(count)]
    for _ in ids:
        async with state.db.transaction() as session:
            assert await queue.claim_next(session, "w1", utcnow(), timedelta(seconds=60))
    return ids


def complete(order_id: str, worker_id: str = "w1") -> Write:
    output = lifecycle.NewOutput(0, f"{order_id}/0.png", "image/png", 1, 8, 8, 100)

    async def write(session: AsyncSession) -> Order | None:
        return await lifecycle.complete(session, order_id, worker_id, [output], utcnow())

    return write


async def statuses(state: AppState, ids: list[str]) -> list[str]:
    async with state.db.transaction(readonly=True) as session:
        rows = {o.id: o.status for o in await session.scalars(select(Order))}
    return [rows[i] for i in ids]


async def outputs(state: AppState, order_id: str) -> int:
    async with state.db.transaction(readonly=True) as session:
        query = select(func.count()).select_from(Output).where(Output.order_id == order_id)
        return int(await session.scalar(query) or 0)


async def test_writes_queued_together_commit_in_one_transaction_and_a_lost_lease_writes_nothing(
    state: AppState,
) -> None:
    a, b, c = await running_orders(state, 3)
    writes = GroupCommit(state.db, max_group=64)
    # b is held by w1, not w2: w2 has lost its lease
    done = await asyncio.gather(
        writes.write(complete(a)), writes.write(complete(b, "w2")), writes.write(complete(c))
    )
    assert [d is not None for d in done] == [True, False, True]
    assert writes.groups == 1
    assert await statuses(state, [a, b, c]) == ["completed", "running", "completed"]
    assert [await outputs(state, i) for i in (a, b, c)] == [1, 0, 1]


async def test_a_database_error_fails_only_its_own_write_and_the_others_are_written_alone(
    state: AppState,
) -> None:
    a, b, c = await running_orders(state, 3)
    writes = GroupCommit(state.db, max_group=64)
    runs = 0

    async def broken(session: AsyncSession) -> Order | None:
        nonlocal runs
        runs += 1
        await complete(b)(session)  # written, then the statement after it fails
        await session.execute(text("SELECT * FROM no_such_table"))
        return None

    done = await asyncio.gather(
        writes.write(complete(a)),
        writes.write(broken),
        writes.write(complete(c)),
        return_exceptions=True,
    )
    assert isinstance(done[0], Order) and isinstance(done[2], Order)
    assert isinstance(done[1], DBAPIError)
    assert runs == 2  # in the group, then alone
    assert writes.groups == 2  # a and c, each alone; the group and b rolled back
    assert await statuses(state, [a, b, c]) == ["completed", "running", "completed"]
    assert await outputs(state, b) == 0

    with pytest.raises(DBAPIError):  # a write failing alone is not run again
        await writes.write(broken)
    assert runs == 3


async def test_groups_hold_at_most_max_group_writes(state: AppState) -> None:
    ids = await running_orders(state, 5)
    writes = GroupCommit(state.db, max_group=2)
    done = await asyncio.gather(*(writes.write(complete(i)) for i in ids))
    assert all(d is not None for d in done)
    assert writes.groups == 3
    assert await statuses(state, ids) == ["completed"] * 5


async def test_an_unreachable_database_fails_every_waiting_write(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'no-such-folder' / 'easel.db'}")
    try:
        writes = GroupCommit(db, max_group=64)
        done = await asyncio.gather(
            *(writes.write(complete(f"o{i}")) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(d, DBAPIError) for d in done)
        assert writes.groups == 0
        assert not writes._waiting
    finally:
        await db.dispose()


def done(order_id: str, worker_id: str = "w1", key: str | None = None) -> OrderDone:
    """A worker's completion of `order_id` with one output (`key`: its storage key)."""
    output = lifecycle.NewOutput(0, key or f"{order_id}/0.png", "image/png", 1, 8, 8, 100)
    return OrderDone(worker_id, lifecycle.Completion(order_id, [output]))


async def running_count(state: AppState) -> int:
    async with state.db.transaction(readonly=True) as session:
        return int(await session.scalar(select(func.sum(Account.running_count))) or 0)


async def test_mergeable_writes_share_a_few_statements_whatever_the_group_size(
    state: AppState,
) -> None:
    statements: list[str] = []

    @event.listens_for(state.db.engine.sync_engine, "before_cursor_execute")
    def count(_conn: object, _cursor: object, sql: str, *_: object) -> None:
        statements.append(sql)

    ids = await running_orders(state, 9)
    assert await running_count(state) == 9
    rows = [NewAttempt(ids[0], n, "m", "c1", "openai", 1, "w1", utcnow()) for n in range(8)]
    writes = GroupCommit(state.db, max_group=64)
    statements.clear()
    # eight completions by w1, one by w2 (which lost its lease), eight attempt rows begun
    results = await asyncio.gather(
        *(writes.write(done(i)) for i in ids[:8]),
        writes.write(done(ids[8], "w2")),
        *(writes.write(AttemptBegin(row)) for row in rows),
    )
    assert writes.groups == 1
    assert [isinstance(r, Order) for r in results[:9]] == [True] * 8 + [False]
    assert results[8] is None
    begun = results[9:]
    assert len(set(begun)) == 8 and all(str(b).startswith("att") for b in begun)
    writing = [s for s in statements if not s.lstrip().upper().startswith(("SELECT", "BEGIN"))]
    # orders (2 UPDATEs: w1's, w2's), outputs, the account's slots, attempts: not 8 each
    assert len(writing) <= 6, writing
    assert await statuses(state, ids) == ["completed"] * 8 + ["running"]
    assert [await outputs(state, i) for i in ids] == [1] * 8 + [0]
    assert await running_count(state) == 1  # eight slots given back in one statement
    async with state.db.transaction(readonly=True) as session:
        rows = list(await session.scalars(select(OrderAttempt)))
    assert sorted(r.id for r in rows) == sorted(begun)
    assert {r.state for r in rows} == {"submitting"}


async def test_a_merged_group_that_fails_is_written_one_write_at_a_time(state: AppState) -> None:
    a, b, c = await running_orders(state, 3)
    writes = GroupCommit(state.db, max_group=64)
    too_long = "k" * 100_000  # over the storage key's column on PostgreSQL; SQLite: NOT NULL
    bad = done(b, key=too_long)
    if state.db.is_sqlite:
        output = lifecycle.NewOutput(0, None, "image/png", 1, 8, 8, 100)  # type: ignore[arg-type]
        bad = OrderDone("w1", lifecycle.Completion(b, [output]))
    results = await asyncio.gather(
        writes.write(done(a)), writes.write(bad), writes.write(done(c)), return_exceptions=True
    )
    assert isinstance(results[0], Order) and isinstance(results[2], Order)
    assert isinstance(results[1], DBAPIError)
    assert writes.groups == 2  # a and c, each alone
    assert await statuses(state, [a, b, c]) == ["completed", "running", "completed"]
    assert await running_count(state) == 1


async def test_an_order_given_twice_in_one_group_is_completed_once(state: AppState) -> None:
    a, b = await running_orders(state, 2)
    writes = GroupCommit(state.db, max_group=64)
    results = await asyncio.gather(
        writes.write(done(a)), writes.write(done(a)), writes.write(done(b))
    )
    assert writes.groups == 1
    assert isinstance(results[0], Order) and results[1] is None
    assert isinstance(results[2], Order)
    assert [await outputs(state, i) for i in (a, b)] == [1, 1]
    assert await running_count(state) == 0
