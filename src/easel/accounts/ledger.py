"""The append-only credit ledger. Balance is derived; nothing here commits.

Buckets: `plan` credits are granted once per calendar month (UTC) at first use and count only in
that month; `topup` credits never expire. A debit takes plan credits first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from easel.catalog import Plan
from easel.clock import next_period_start, period_of
from easel.db.engine import is_postgresql
from easel.db.tables import LedgerEntry
from easel.errors import InvalidRequest, QuotaExceeded

REFUND_ENHANCE = "refund_enhance"  # an llm_enhance order's enhancement, skipped


@dataclass(frozen=True)
class Balance:
    plan: int
    topup: int
    resets_at: datetime

    @property
    def total(self) -> int:
        return self.plan + self.topup


def _insert_ignoring_conflicts(session: AsyncSession, rows: list[dict[str, Any]]) -> Any:
    insert = postgresql.insert if is_postgresql(session) else sqlite.insert
    return insert(LedgerEntry).values(rows).on_conflict_do_nothing()


async def ensure_grant(session: AsyncSession, account_id: str, plan: Plan, now: datetime) -> None:
    """This month's plan credits, written once (a unique index, not a Python check)."""
    row = {
        "account_id": account_id,
        "kind": "grant",
        "bucket": "plan",
        "amount": plan.credits,
        "period": period_of(now),
        "order_id": None,
        "note": f"monthly grant, plan {plan.id}",
        "created_at": now,
    }
    await session.execute(_insert_ignoring_conflicts(session, [row]))


async def balance_with_grant(
    session: AsyncSession, account_id: str, plan: Plan | None, now: datetime
) -> Balance:
    """The balance once this month's credits of `plan` (when it is in the catalog) are written."""
    if plan is not None:
        await ensure_grant(session, account_id, plan, now)
    return await balance(session, account_id, now)


async def balance(session: AsyncSession, account_id: str, now: datetime) -> Balance:
    period = period_of(now)
    plan_sum = func.coalesce(
        func.sum(
            case(
                (
                    (LedgerEntry.bucket == "plan") & (LedgerEntry.period == period),
                    LedgerEntry.amount,
                ),
                else_=0,
            )
        ),
        0,
    )
    topup_sum = func.coalesce(
        func.sum(case((LedgerEntry.bucket == "topup", LedgerEntry.amount), else_=0)), 0
    )
    row = (
        await session.execute(
            select(plan_sum, topup_sum).where(LedgerEntry.account_id == account_id)
        )
    ).one()
    return Balance(plan=int(row[0]), topup=int(row[1]), resets_at=next_period_start(now))


async def debit(
    session: AsyncSession,
    account_id: str,
    order_id: str | None,
    amount: int,
    now: datetime,
    note: str = "order",
    kind: str = "debit",
) -> None:
    """Charge an order (or, `order_id` None, something else: `note` says what), plan credits
    first. The caller holds the account lock. `kind`: another charge tied to the order (unique
    with the order and bucket, like a released output's)."""
    have = await balance(session, account_id, now)
    if amount > have.total:
        raise QuotaExceeded(
            f"this order costs {amount} credits but {have.total} are left "
            f"({have.plan} plan credits until {have.resets_at:%Y-%m-%d}, {have.topup} top-up); "
            "ask for fewer images, or top up"
        )
    from_plan = min(amount, max(have.plan, 0))
    parts = [("plan", from_plan), ("topup", amount - from_plan)]
    for bucket, part in parts:
        if part:
            session.add(
                LedgerEntry(
                    account_id=account_id,
                    kind=kind,
                    bucket=bucket,
                    amount=-part,
                    period=period_of(now),
                    order_id=order_id,
                    note=note[:256],
                    created_at=now,
                )
            )
    await session.flush()


async def _refundable(session: AsyncSession, order_id: str) -> list[tuple[str, str, int, str]]:
    """(account, bucket, credits not yet given back, period) of each bucket the order's debit
    took from: what it was charged less every refund already written for it."""
    rows = (
        await session.execute(
            select(
                LedgerEntry.account_id,
                LedgerEntry.kind,
                LedgerEntry.bucket,
                LedgerEntry.amount,
                LedgerEntry.period,
            ).where(LedgerEntry.order_id == order_id)
        )
    ).all()
    refunded: dict[str, int] = {}
    for _, kind, bucket, amount, _ in rows:
        if kind.startswith("refund"):
            refunded[bucket] = refunded.get(bucket, 0) + amount
    left = []
    for account_id, kind, bucket, amount, period in rows:
        if kind == "debit":
            left.append((account_id, bucket, -amount - refunded.get(bucket, 0), period))
    return left


async def refund(session: AsyncSession, order_id: str, now: datetime, note: str) -> int:
    """Give back what the order was charged and not yet given back (a part refund, such as an
    enhancement that was skipped, is not given twice); a second call adds nothing (unique
    constraint)."""
    rows = [
        {
            "account_id": account_id,
            "kind": "refund",
            "bucket": bucket,
            "amount": left,
            "period": period,  # plan credits go back to the month they came from
            "order_id": order_id,
            "note": note[:256],
            "created_at": now,
        }
        for account_id, bucket, left, period in await _refundable(session, order_id)
        if left > 0
    ]
    if not rows:
        return 0
    result = await session.execute(
        _insert_ignoring_conflicts(session, rows).returning(LedgerEntry.amount)
    )
    return sum(result.scalars().all())


async def refund_part(
    session: AsyncSession,
    order_id: str,
    amount: int,
    now: datetime,
    note: str,
    kind: str = "refund_part",
) -> int:
    """Give back `amount` of what the order was charged and not yet given back (top-up credits
    first), once per order and `kind` (refund_part: blocked outputs; refund_enhance: a skipped
    enhancement): a second call adds nothing (unique constraint)."""
    rows = []
    left = amount
    refundable = await _refundable(session, order_id)
    for account_id, bucket, charged, period in sorted(refundable, key=lambda d: d[1] != "topup"):
        part = min(left, charged)
        if part <= 0:
            continue
        left -= part
        rows.append(
            {
                "account_id": account_id,
                "kind": kind,
                "bucket": bucket,
                "amount": part,
                "period": period,
                "order_id": order_id,
                "note": note[:256],
                "created_at": now,
            }
        )
    if not rows:
        return 0
    result = await session.execute(
        _insert_ignoring_conflicts(session, rows).returning(LedgerEntry.amount)
    )
    return sum(result.scalars().all())


async def top_up(
    session: AsyncSession, account_id: str, amount: int, now: datetime, note: str = "top-up"
) -> None:
    if amount <= 0:
        raise InvalidRequest(f"a top-up must be a positive number of credits, not {amount}")
    session.add(
        LedgerEntry(
            account_id=account_id,
            kind="topup",
            bucket="topup",
            amount=amount,
            period=period_of(now),
            order_id=None,
            note=note,
            created_at=now,
        )
    )
    await session.flush()


async def entries(
    session: AsyncSession, account_id: str, *, limit: int, offset: int
) -> list[LedgerEntry]:
    """A page of the account's ledger, newest first."""
    rows = await session.scalars(
        select(LedgerEntry)
        .where(LedgerEntry.account_id == account_id)
        .order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows)


async def spent_per_day(
    session: AsyncSession, account_id: str, now: datetime, days: int
) -> list[tuple[str, int]]:
    """Credits spent (debits less refunds) on each of the last `days` UTC days, oldest first; a
    day whose refunds (of earlier days' debits) outweigh its debits counts 0."""
    first = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = await session.execute(
        select(LedgerEntry.created_at, LedgerEntry.amount).where(
            LedgerEntry.account_id == account_id,
            LedgerEntry.kind.not_in(("grant", "topup")),
            LedgerEntry.created_at >= first,
        )
    )
    spent = {(first + timedelta(days=i)).strftime("%Y-%m-%d"): 0 for i in range(days)}
    for created_at, amount in rows:
        day = created_at.strftime("%Y-%m-%d")
        if day in spent:
            spent[day] -= amount
    return [(day, max(value, 0)) for day, value in spent.items()]
