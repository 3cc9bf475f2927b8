"""People who sign in to the web console: one account each, an argon2 password hash."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from easel.db.tables import Account, ConsoleSession, ConsoleUser
from easel.errors import Conflict, InvalidRequest, NotFound
from easel.ids import new_id


def normal_email(email: str) -> str:
    email = email.strip().lower()
    local, _, domain = email.partition("@")
    if not local or not domain or " " in email or len(email) > 320:
        raise InvalidRequest(
            f"{email!r} is not an email address; write it as name@host", param="email"
        )
    return email


async def create_user(
    session: AsyncSession, account_id: str, email: str, password_hash: str, now: datetime
) -> ConsoleUser:
    email = normal_email(email)
    if await session.scalar(select(ConsoleUser.id).where(ConsoleUser.email == email)):
        raise Conflict(
            f"{email} already has a sign-in; sign in, or reset its password", param="email"
        )
    user = ConsoleUser(
        id=new_id("usr", 16),
        account_id=account_id,
        email=email,
        password_hash=password_hash,
        created_at=now,
        password_changed_at=now,
    )
    session.add(user)
    await session.flush()
    return user


async def user_by_email(session: AsyncSession, email: str) -> ConsoleUser | None:
    found: ConsoleUser | None = await session.scalar(
        select(ConsoleUser).where(ConsoleUser.email == email.strip().lower())
    )
    return found


async def get_user(session: AsyncSession, user_id: str) -> ConsoleUser:
    user = await session.get(ConsoleUser, user_id)
    if user is None:
        raise NotFound(f"no console user {user_id}")
    return user


async def user_and_account(
    session: AsyncSession, user_id: str
) -> tuple[ConsoleUser, Account] | None:
    row = (
        await session.execute(
            select(ConsoleUser, Account)
            .join(Account, Account.id == ConsoleUser.account_id)
            .where(ConsoleUser.id == user_id)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def set_password_hash(
    session: AsyncSession, user: ConsoleUser, password_hash: str, now: datetime
) -> None:
    """A new password signs the person out everywhere (every session row goes)."""
    user.password_hash = password_hash
    user.password_changed_at = now
    await session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user.id))
    await session.flush()
