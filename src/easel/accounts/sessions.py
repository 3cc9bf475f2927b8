"""Signed-in browsers: a random token in the cookie, its SHA-256 in `console_sessions`.
Deleting the row signs the browser out; every row of a user: signed out everywhere."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from easel.db.tables import ConsoleSession, ConsoleUser


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(
    session: AsyncSession,
    user_id: str,
    now: datetime,
    lifetime: timedelta,
    keep: int,
    user_agent: str = "",
) -> str:
    """A new session; returns the token for the cookie (never stored). The user's expired
    sessions go, and the oldest beyond `keep` live ones (one person cannot pile up rows)."""
    await session.execute(
        delete(ConsoleSession).where(
            ConsoleSession.user_id == user_id, ConsoleSession.expires_at <= now
        )
    )
    older = list(
        await session.scalars(
            select(ConsoleSession.token_hash)
            .where(ConsoleSession.user_id == user_id)
            .order_by(ConsoleSession.created_at.desc())
            .offset(max(keep - 1, 0))
        )
    )
    if older:
        await session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash.in_(older)))
    token = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            token_hash=token_hash(token),
            user_id=user_id,
            created_at=now,
            expires_at=now + lifetime,
            user_agent=user_agent[:256],
        )
    )
    await session.flush()
    return token


async def session_user(session: AsyncSession, token: str, now: datetime) -> str | None:
    """The user id of a live session, None when unknown, ended or expired."""
    row = await session.scalar(
        select(ConsoleSession).where(ConsoleSession.token_hash == token_hash(token))
    )
    if row is None or row.expires_at <= now:
        return None
    return row.user_id


async def close_session(session: AsyncSession, token: str) -> None:
    await session.execute(
        delete(ConsoleSession).where(ConsoleSession.token_hash == token_hash(token))
    )


async def close_all(session: AsyncSession, user_id: str) -> int:
    result = await session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user_id))
    return int(getattr(result, "rowcount", 0) or 0)


async def close_account(session: AsyncSession, account_id: str) -> None:
    """Sign out every person of the account."""
    people = select(ConsoleUser.id).where(ConsoleUser.account_id == account_id)
    await session.execute(delete(ConsoleSession).where(ConsoleSession.user_id.in_(people)))


async def count_sessions(session: AsyncSession, user_id: str, now: datetime) -> int:
    count = await session.scalar(
        select(func.count()).where(
            ConsoleSession.user_id == user_id, ConsoleSession.expires_at > now
        )
    )
    return int(count or 0)
