from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from easel.accounts import ledger
from easel.api.state import AppState
from easel.config import Settings
from easel.db.tables import LedgerEntry
from easel.errors import QuotaExceeded
from tests.support.app import new_account

pytestmark = pytest.mark.anyio

NOV = datetime(2026, 11, 15, tzinfo=UTC)
DEC = datetime(2026, 12, 2, tzinfo=UTC)


async def test_grant_once_a_month_plan_first_and_no_carry_over(settings: Settings) -> None:
    state = AppState.build(settings)
    account, _ = await new_account(state, "standard")
    plan = state.catalog.plans["standard"]
    try:
        async with state.db.transaction() as s:
            await ledger.ensure_grant(s, account.id, plan, NOV)
            await ledger.ensure_grant(s, account.id, plan, NOV)  # idempotent
            await ledger.top_up(s, account.id, 50, NOV)
            bal = await ledger.balance(s, account.id, NOV)
            assert (bal.plan, bal.topup) == (300, 50)
            await ledger.debit(s, account.id, "ORD-1", 290, NOV)
            await ledger.debit(s, account.id, "ORD-2", 20, NOV)  # 10 plan + 10 top-up
            bal = await ledger.balance(s, account.id, NOV)
            assert (bal.plan, bal.topup) == (0, 40)
            assert bal.resets_at == datetime(2026, 12, 1, tzinfo=UTC)
            with pytest.raises(QuotaExceeded, match="costs 41 credits but 40 are left"):
                await ledger.debit(s, account.id, "ORD-3", 41, NOV)
            # December: a fresh grant; November's plan credits are gone, top-up stays.
            await ledger.ensure_grant(s, account.id, plan, DEC)
            bal = await ledger.balance(s, account.id, DEC)
            assert (bal.plan, bal.topup) == (300, 40)
    finally:
        await state.db.dispose()


async def test_refund_happens_at_most_once(settings: Settings) -> None:
    state = AppState.build(settings)
    account, _ = await new_account(state, "standard", topup=5)
    try:
        async with state.db.transaction() as s:
            await ledger.debit(s, account.id, "ORD-R", 5, NOV)
        for expected in (5, 0, 0):
            async with state.db.transaction() as s:
                assert await ledger.refund(s, "ORD-R", NOV, "failed") == expected
        async with state.db.transaction() as s:
            refunds = (
                await s.scalars(
                    select(LedgerEntry).where(
                        LedgerEntry.order_id == "ORD-R", LedgerEntry.kind == "refund"
                    )
                )
            ).all()
            assert [r.amount for r in refunds] == [5]
            assert (await ledger.balance(s, account.id, NOV)).topup == 5
    finally:
        await state.db.dispose()
