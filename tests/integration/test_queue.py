"""The claim statement under concurrent claimers; leases and the reaper."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from easel.accounts import ledger
from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.tables import Account, Order
from easel.orders import lifecycle, queue
from tests.support.app import new_account
from tests.support.catalogs import with_caps
from tests.support.orders import submit_order

pytestmark = pytest.mark.anyio

LEASE = timedelta(seconds=60)


async def claim(state: AppState, worker: str, lease: timedelta = LEASE) -> Order | None:
    async with state.db.transaction() as s:
        return await queue.claim_next(s, worker, utcnow(), lease)


async def drain(state: AppState, worker: str) -> list[str]:
    claimed = []
    while (order := await claim(state, worker)) is not None:
        claimed.append(order.id)
    return claimed


async def make_orders(state: AppState, per_account: int) -> list[tuple[int, str]]:
    """(priority, id) for orders from one account per plan, submitted interleaved."""
    accounts = [(await new_account(state, plan))[0] for plan in ("standard", "mega", "pro", "free")]
    made = []
    for i in range(per_account):
        for account in accounts:
            order_id = await submit_order(state, account, "turbo", prompt=f"p{i}")
            made.append((state.catalog.plans[account.plan].priority, order_id))
    return made


async def test_claims_follow_priority_then_age(settings: Settings, tmp_path: Path) -> None:
    state = AppState.build(with_caps(settings, tmp_path, 100))
    try:
        made = await make_orders(state, 3)
        expected = [oid for _, oid in sorted(made, key=lambda po: -po[0])]  # stable: by age
        assert await drain(state, "w1") == expected
    finally:
        await state.db.dispose()


async def test_concurrent_claimers_never_share_an_order(settings: Settings, tmp_path: Path) -> None:
    state = AppState.build(with_caps(settings, tmp_path, 100))
    try:
        made = await make_orders(state, 10)
        ranked = [oid for _, oid in sorted(made, key=lambda po: -po[0])]
        first = await asyncio.gather(*(claim(state, f"w{i}") for i in range(8)))
        assert {o.id for o in first if o} == set(ranked[:8])
        rest = await asyncio.gather(*(drain(state, f"w{i}") for i in range(8)))
        claimed = [o.id for o in first if o] + [oid for part in rest for oid in part]
        assert len(claimed) == len(set(claimed)) == len(made)
    finally:
        await state.db.dispose()


async def test_running_caps_hold_under_concurrency(settings: Settings, tmp_path: Path) -> None:
    state = AppState.build(with_caps(settings, tmp_path, 2))
    try:
        await make_orders(state, 6)
        results = await asyncio.gather(*(drain(state, f"w{i}") for i in range(8)))
        claimed = [oid for part in results for oid in part]
        async with state.db.transaction() as s:
            rows = (
                await s.execute(select(Order.account_id, Order.id).where(Order.id.in_(claimed)))
            ).all()
            per_account: dict[str, int] = {}
            for account_id, _ in rows:
                per_account[account_id] = per_account.get(account_id, 0) + 1
            assert sorted(per_account.values()) == [2, 2, 2, 2]
            counts = list(await s.scalars(select(Account.running_count)))
            assert sorted(counts) == [2, 2, 2, 2]
            # Finishing one frees exactly one slot of that account.
            done = await lifecycle.complete(
                s, rows[0][1], await _worker_of(s, rows[0][1]), [], utcnow()
            )
            assert done is not None
        again = await drain(state, "w-late")
        assert len(again) == 1
    finally:
        await state.db.dispose()


async def _worker_of(s: object, order_id: str) -> str:
    order = await s.get(Order, order_id)  # type: ignore[attr-defined]
    return str(order.worker_id)


async def test_expired_lease_is_requeued_then_failed_and_refunded_once(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"max_attempts": 2})
    state = AppState.build(settings)
    try:
        account, _ = await new_account(state, "standard")
        order_id = await submit_order(state, account, "general")
        for attempt, expected in ((1, "requeued"), (2, "failed")):
            order = await claim(state, f"w{attempt}", lease=timedelta(seconds=-1))
            assert order is not None and order.id == order_id and order.attempts == attempt
            async with state.db.transaction() as s:
                expired = await queue.expired_leases(s, utcnow())
                assert [o.id for o in expired] == [order_id]
                outcome = await lifecycle.requeue_or_fail(
                    s, expired[0], settings.max_attempts, utcnow()
                )
            assert outcome == expected
        async with state.db.transaction() as s:
            order = await s.get(Order, order_id)
            assert order is not None
            assert (order.status, order.error_code) == ("failed", "worker_lost")
            acct = await s.get(Account, account.id)
            assert acct is not None and acct.running_count == 0
            assert (await ledger.balance(s, account.id, utcnow())).total == 300
            # A late completion from the lost worker changes nothing.
            assert await lifecycle.complete(s, order_id, "w2", [], utcnow()) is None
            assert await lifecycle.fail(s, order_id, "w2", "x", "y", utcnow()) is None
            assert await ledger.refund(s, order_id, utcnow(), "again") == 0
    finally:
        await state.db.dispose()
