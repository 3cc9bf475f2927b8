"""API keys: shown once, stored as SHA-256 with a display prefix."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from easel.clock import utcnow
from easel.db.tables import Account, ApiKey
from easel.errors import Conflict, NotFound, Unauthorized
from easel.ids import new_id, random_chars

KEY_PREFIX = "cfy-"
KEY_RANDOM_CHARS = 32
LAST_USED_RESOLUTION = timedelta(seconds=60)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(session: AsyncSession, account_id: str, name: str = "") -> tuple[ApiKey, str]:
    """A new key row and the plain key, which is never stored."""
    plain = KEY_PREFIX + random_chars(KEY_RANDOM_CHARS)
    row = ApiKey(
        id=new_id("key", 16),
        account_id=account_id,
        prefix=plain[: len(KEY_PREFIX) + 4],
        key_hash=hash_key(plain),
        name=name,
        created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    return row, plain


async def authenticate(session: AsyncSession, plain: str) -> tuple[Account, ApiKey]:
    """The key's account; read-only, so it can run in a read transaction."""
    row = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plain)))
    if row is None:
        raise Unauthorized("unknown API key; create one with `easel keys create --account EMAIL`")
    if row.revoked_at is not None:
        raise Unauthorized(f"API key {row.prefix}… was revoked; use another key")
    account = await session.get(Account, row.account_id)
    if account is None:
        raise Unauthorized("the account of this API key no longer exists")
    if account.disabled_at is not None:
        raise Unauthorized("the account of this API key is disabled; ask the operator")
    return account, row


def last_used_is_stale(key: ApiKey, now: datetime) -> bool:
    return key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION


async def touch_key(session: AsyncSession, key_id: str, now: datetime) -> None:
    await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))


async def list_keys(session: AsyncSession, account_id: str) -> list[ApiKey]:
    rows = await session.scalars(
        select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at)
    )
    return list(rows)


async def revoke_key(session: AsyncSession, ref: str) -> ApiKey:
    """Revoke a key by id, display prefix or the plain key itself."""
    rows = list(
        await session.scalars(
            select(ApiKey).where(
                (ApiKey.id == ref) | (ApiKey.prefix == ref) | (ApiKey.key_hash == hash_key(ref))
            )
        )
    )
    if not rows:
        raise NotFound(f"no API key with id or prefix {ref!r}")
    if len(rows) > 1:
        raise Conflict(f"{len(rows)} keys start with {ref!r}; revoke by key id instead")
    row = rows[0]
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


async def revoke_own_key(session: AsyncSession, account_id: str, key_id: str) -> ApiKey:
    """Revoke one of the account's keys by id; another account's key is not found."""
    row = await session.scalar(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.account_id == account_id)
    )
    if row is None:
        raise NotFound(f"no API key {key_id} in this account")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row
