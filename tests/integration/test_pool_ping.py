"""PostgreSQL's pooled connections are pinged before use only after they sat idle a while
(db/engine.py): a busy worker's transactions skip the ping's round trips, and a connection the
server dropped is still replaced before a transaction uses it."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from easel.db import engine as engine_module
from easel.db.engine import Database

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
async def db(db_url: str) -> Any:
    database = Database(db_url, pool_size=2, max_overflow=0)
    try:
        yield database
    finally:
        await database.dispose()


def count_pings(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    pings: list[Any] = []
    original = db.engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return original(dbapi_connection)

    monkeypatch.setattr(db.engine.dialect, "do_ping", counted)
    return pings


async def one(db: Database) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(text("SELECT 1")))


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_connection_used_a_moment_ago_is_not_pinged(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = count_pings(db, monkeypatch)
    for _ in range(20):
        assert await one(db) == 1
    assert pings == []
    monkeypatch.setattr(engine_module, "PING_IDLE_SECONDS", 0.0)  # every one is idle "long"
    assert await one(db) == 1
    assert len(pings) == 1


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("idle", [False, True], ids=["just-used", "idle"])
async def test_a_connection_the_server_dropped_is_replaced(
    db: Database, monkeypatch: pytest.MonkeyPatch, idle: bool
) -> None:
    """Idle: its ping fails. Used a moment ago: the close the event loop has read already."""
    async with db.transaction() as session:
        pid = await session.scalar(text("SELECT pg_backend_pid()"))
    dsn = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    if idle:
        monkeypatch.setattr(engine_module, "PING_IDLE_SECONDS", 0.0)
    else:
        await asyncio.sleep(0.2)  # the loop reads the server's close
    async with db.transaction() as session:
        assert await session.scalar(text("SELECT pg_backend_pid()")) != pid
