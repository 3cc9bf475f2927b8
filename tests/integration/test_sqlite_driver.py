"""SQLite through aiosqlite with one hand-off to its thread per statement (db/sqlite_driver.py):
the statement's rows, row count, last row id and errors come back as the DBAPI gives them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from easel.db.engine import Database
from easel.db.sqlite_driver import OneTripDBAPI

pytestmark = pytest.mark.anyio


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with database.transaction() as session:
        await session.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)"))
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def hand_offs(monkeypatch: pytest.MonkeyPatch) -> list[Callable[..., Any]]:
    """Every function aiosqlite runs in its thread, from now on."""
    calls: list[Callable[..., Any]] = []
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Callable[..., Any], *a: Any, **k: Any) -> Any:
        calls.append(fn)
        return await original(self, fn, *a, **k)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return calls


async def test_the_embedded_database_uses_it(db: Database) -> None:
    assert isinstance(db.engine.dialect.dbapi, OneTripDBAPI)


async def test_each_statement_is_one_hand_off(
    db: Database, hand_offs: list[Callable[..., Any]]
) -> None:
    async with db.transaction() as session:
        await session.execute(text("SELECT 1"))  # the session begins: BEGIN IMMEDIATE first
        hand_offs.clear()
        inserted = await session.execute(text("INSERT INTO t (v) VALUES ('a'), ('b'), ('c')"))
        assert len(hand_offs) == 1
        assert inserted.rowcount == 3
        rows = (await session.execute(text("SELECT id, v FROM t ORDER BY id"))).all()
        assert len(hand_offs) == 2
        assert [tuple(r) for r in rows] == [(1, "a"), (2, "b"), (3, "c")]
        changed = await session.execute(
            text("UPDATE t SET v = v || '!' WHERE id > 1 RETURNING id, v")
        )
        assert sorted(tuple(r) for r in changed.all()) == [(2, "b!"), (3, "c!")]
        assert len(hand_offs) == 3
        empty = await session.execute(text("UPDATE t SET v = 'x' WHERE id = 99"))
        assert empty.rowcount == 0


async def test_many_rows_and_executemany(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(
            text("INSERT INTO t (v) VALUES (:v)"), [{"v": f"row {i}"} for i in range(2500)]
        )
    async with db.transaction(readonly=True) as session:
        result = await session.execute(text("SELECT v FROM t ORDER BY id"))
        first = result.fetchone()
        rest = result.fetchall()
    assert first is not None and first.v == "row 0"
    assert len(rest) == 2499 and rest[-1].v == "row 2499"


async def test_last_row_id_and_errors_keep_the_connection(db: Database) -> None:
    async with db.engine.connect() as conn:
        result = await conn.execute(text("INSERT INTO t (v) VALUES ('once')"))
        assert result.lastrowid == 1
        with pytest.raises(IntegrityError, match="UNIQUE"):
            await conn.execute(text("INSERT INTO t (v) VALUES ('once')"))
        await conn.rollback()
        after = await conn.execute(text("SELECT count(*) FROM t"))
        assert after.scalar_one() == 0  # the first insert was rolled back with the failed one
        await conn.execute(text("INSERT INTO t (v) VALUES ('again')"))
        await conn.commit()
    async with db.transaction(readonly=True) as session:
        assert (await session.scalar(text("SELECT v FROM t"))) == "again"
