"""Password hashing (argon2id, argon2-cffi's defaults) and the rules a new password follows."""

from __future__ import annotations

import asyncio
import contextlib
import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from easel.errors import InvalidRequest

MIN_CHARS = 10
MAX_CHARS = 256
_HASHER = PasswordHasher()


def check_new_password(password: str, param: str = "password") -> str:
    if len(password) < MIN_CHARS:
        raise InvalidRequest(
            f"the password has {len(password)} characters; use at least {MIN_CHARS}", param=param
        )
    if len(password) > MAX_CHARS:
        raise InvalidRequest(f"the password is longer than {MAX_CHARS} characters", param=param)
    return password


async def hash_password(password: str, gate: asyncio.Semaphore | None = None) -> str:
    """Hashed off the event loop (it takes tens of milliseconds on purpose), at most `gate`'s
    count at once."""
    async with gate or contextlib.nullcontext():
        return await asyncio.to_thread(_HASHER.hash, password)


async def verify_password(
    password_hash: str, password: str, gate: asyncio.Semaphore | None = None
) -> bool:
    def check() -> bool:
        try:
            return _HASHER.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async with gate or contextlib.nullcontext():
        return await asyncio.to_thread(check)


@functools.cache
def dummy_hash() -> str:
    """Verified against when the email is unknown, so that an unknown email takes as long as a
    wrong password (made at first use, not at import)."""
    return _HASHER.hash("not a password of anyone")
