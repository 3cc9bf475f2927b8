"""Accounts and their plans."""

from __future__ import annotations

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from easel.accounts import sessions
from easel.catalog import Catalog
from easel.clock import utcnow
from easel.db.tables import ACCOUNTS, Account
from easel.errors import Conflict, InvalidRequest, NotFound
from easel.ids import new_id
from easel.webhooks.signing import new_secret


def _plan_or_raise(catalog: Catalog, plan: str) -> int:
    if plan not in catalog.plans:
        raise InvalidRequest(f"unknown plan {plan!r}; plans: {', '.join(catalog.plans)}")
    return catalog.plans[plan].max_running


async def create_account(
    session: AsyncSession, catalog: Catalog, email: str, plan: str, *, is_admin: bool = False
) -> Account:
    max_running = _plan_or_raise(catalog, plan)
    email = email.strip().lower()
    if "@" not in email:
        raise InvalidRequest(f"{email!r} is not an email address")
    exists = await session.scalar(select(Account.id).where(Account.email == email))
    if exists:
        raise Conflict(f"an account with email {email} already exists ({exists})")
    account = Account(
        id=new_id("acc", 16),
        email=email,
        plan=plan,
        is_admin=is_admin,
        running_count=0,
        max_running=max_running,
        webhook_secret=new_secret(),
        created_at=utcnow(),
    )
    session.add(account)
    await session.flush()
    return account


async def find_account(session: AsyncSession, ref: str) -> Account:
    """An account by id or email."""
    account = await session.scalar(
        select(Account).where(or_(Account.id == ref, Account.email == ref.strip().lower()))
    )
    if account is None:
        raise NotFound(f"no account with id or email {ref!r}")
    return account


async def set_plan(session: AsyncSession, catalog: Catalog, account: Account, plan: str) -> None:
    account.max_running = _plan_or_raise(catalog, plan)
    account.plan = plan
    await session.flush()


async def set_disabled(session: AsyncSession, account: Account, disabled: bool) -> None:
    """A disabled account's keys are refused from the next request on, and its people are
    signed out of the console (in the caller's transaction)."""
    account.disabled_at = utcnow() if disabled else None
    if disabled:
        await sessions.close_account(session, account.id)
    await session.flush()


async def search_accounts(session: AsyncSession, text: str, limit: int) -> list[Account]:
    """Accounts whose email or id contains `text`, newest first."""
    query = select(Account)
    if text.strip():
        like = f"%{text.strip().lower()}%"
        query = query.where(or_(Account.email.like(like), Account.id.like(like)))
    return list(await session.scalars(query.order_by(Account.created_at.desc()).limit(limit)))


async def get_account(session: AsyncSession, account_id: str) -> Account:
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound(f"no account {account_id}")
    return account


async def lock_account(session: AsyncSession, account_id: str) -> Account:
    """Row-lock the account (PostgreSQL); SQLite's BEGIN IMMEDIATE already serialises writers."""
    account = await session.scalar(
        select(Account).where(Account.id == account_id).with_for_update()
    )
    if account is None:
        raise NotFound(f"no account {account_id}")
    return account


async def plans_of(session: AsyncSession, account_ids: set[str]) -> dict[str, str]:
    """Account id -> plan id."""
    rows = await session.execute(
        select(Account.id, Account.plan).where(Account.id.in_(account_ids))
    )
    return {account_id: plan for account_id, plan in rows.all()}


async def count_accounts(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Account)) or 0)


async def release_running_slot(session: AsyncSession, account_id: str, count: int = 1) -> None:
    """`count` of the account's running slots back (never below zero)."""
    table = ACCOUNTS.c
    await session.execute(  # Core: no ORM session bookkeeping for a counter
        update(ACCOUNTS)
        .where(table.id == account_id, table.running_count > 0)
        .values(
            running_count=case((table.running_count > count, table.running_count - count), else_=0)
        )
    )
