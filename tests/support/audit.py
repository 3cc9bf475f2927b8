"""Check that every order of an account ended right and the ledger balances."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from easel.accounts import ledger
from easel.api.state import AppState
from easel.clock import utcnow
from easel.db.tables import Account, LedgerEntry, Order, Output


@dataclass
class Audit:
    statuses: dict[str, str]
    problems: list[str]
    balance: int
    expected_balance: int


async def audit_account(session: AsyncSession, account_id: str, granted: int) -> Audit:
    orders = list(await session.scalars(select(Order).where(Order.account_id == account_id)))
    problems = []
    spent = 0
    for order in orders:
        rows = (
            await session.execute(
                select(LedgerEntry.kind, func.sum(LedgerEntry.amount), func.count())
                .where(LedgerEntry.order_id == order.id)
                .group_by(LedgerEntry.kind)
            )
        ).all()
        by_kind = {kind: (int(total), int(count)) for kind, total, count in rows}
        debit = -by_kind.get("debit", (0, 0))[0]
        refund, refund_rows = by_kind.get("refund", (0, 0))
        outputs = await session.scalar(
            select(func.count()).select_from(Output).where(Output.order_id == order.id)
        )
        if debit != order.cost_credits:
            problems.append(f"{order.id}: charged {debit}, cost {order.cost_credits}")
        if order.status == "completed":
            if refund or outputs != order.n:
                problems.append(f"{order.id}: completed with refund {refund}, {outputs} outputs")
            spent += debit
        elif order.status in ("failed", "canceled"):
            if refund != debit:
                problems.append(f"{order.id}: {order.status}, refunded {refund} of {debit}")
        else:
            problems.append(f"{order.id}: still {order.status}")
        if refund_rows > 2:
            problems.append(f"{order.id}: {refund_rows} refund rows")
    account = await session.get(Account, account_id)
    assert account is not None
    if account.running_count != 0:
        problems.append(f"running_count is {account.running_count}")
    balance = (await ledger.balance(session, account_id, utcnow())).total
    return Audit(
        statuses={o.id: o.status for o in orders},
        problems=problems,
        balance=balance,
        expected_balance=granted - spent,
    )


async def nothing_happened(state: AppState, account_id: str, credits_before: int) -> None:
    """No order, no debit, and the balance unchanged: what every refused request must leave."""
    async with state.db.transaction() as s:
        orders = await s.scalar(
            select(func.count()).select_from(Order).where(Order.account_id == account_id)
        )
        debits = await s.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.account_id == account_id, LedgerEntry.kind == "debit")
        )
        account = await s.get(Account, account_id)
        assert account is not None
        await ledger.ensure_grant(s, account_id, state.catalog.plans[account.plan], utcnow())
        bal = await ledger.balance(s, account_id, utcnow())
    assert (orders, debits, bal.total) == (0, 0, credits_before)
