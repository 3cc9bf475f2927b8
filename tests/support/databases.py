"""Real databases for tests: a SQLite file per test, or a PostgreSQL database copied per test
from a template migrated once per session."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy import make_url

from easel.db.engine import Database
from easel.db.migrate import migrate

ADMIN_URL = os.environ.get(
    "EASEL_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def _admin(sql: str, admin_url: str = ADMIN_URL) -> None:
    conn = await asyncpg.connect(_dsn(admin_url), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def postgres_reachable() -> str | None:
    """None when reachable, else why not."""
    try:
        asyncio.run(_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def _migrate(url: str) -> None:
    db = Database(url)
    try:
        await migrate(db)
    finally:
        await db.dispose()


class PostgresTemplate:
    def __init__(self) -> None:
        self.name = f"easel_tpl_{uuid.uuid4().hex[:10]}"
        self.created: list[str] = []

    def create(self) -> None:
        asyncio.run(_admin(f'CREATE DATABASE "{self.name}"'))
        asyncio.run(_migrate(_with_database(ADMIN_URL, self.name)))

    def copy(self) -> str:
        name = f"easel_t_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.name}"'))
        self.created.append(name)
        return _with_database(ADMIN_URL, name)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


async def create_database(admin_url: str = ADMIN_URL, prefix: str = "easel_bench") -> str:
    """A new, empty database on the server of `admin_url`; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}"', admin_url)
    return _with_database(admin_url, name)


async def drop_database(url: str, admin_url: str = ADMIN_URL) -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)', admin_url)


def sqlite_url(directory: Path) -> str:
    path = directory / "easel.db"
    if not path.exists():
        asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return f"sqlite+aiosqlite:///{path}"
