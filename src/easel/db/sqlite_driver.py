"""SQLite through aiosqlite with one hand-off to its thread per statement.

SQLAlchemy's aiosqlite adapter drives an aiosqlite cursor the DBAPI way: open it, execute, read
the rows, close it; each of those is a hand-off to aiosqlite's thread and back through the event
loop (four per statement). Under load each hand-off waits for the loop, and a write transaction
holds SQLite's one writer lock across all of them. Here a statement's cursor is opened, executed,
read (description, row count, last row id, every row) and closed in one call in that thread; the
adapter then reads what came back without another. The dialect, its SQL and its pool are
SQLAlchemy's own; only the DBAPI module it drives changes (`create_async_engine(module=...)`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, cast

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util.concurrency import await_

Outcome = tuple[Any, int, int | None, list[Any]]  # description, rowcount, lastrowid, rows


def _run(connection: aiosqlite.Connection, operation: str, parameters: Any, many: bool) -> Outcome:
    """In aiosqlite's thread: the whole statement, its cursor closed after."""
    cursor = connection._conn.cursor()  # the sqlite3 connection, in its thread
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class StatementCursor:
    """The asyncio cursor SQLAlchemy's adapter expects, holding one statement's outcome."""

    arraysize = 1

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []

    async def __aenter__(self) -> StatementCursor:
        return self

    async def execute(self, operation: str, parameters: Any = None) -> None:
        await self._take(operation, parameters, many=False)

    async def executemany(self, operation: str, parameters: Sequence[Any]) -> None:
        await self._take(operation, parameters, many=True)

    async def _take(self, operation: str, parameters: Any, *, many: bool) -> None:
        outcome: Outcome = await self._connection._execute(  # type: ignore[no-untyped-call]
            _run, self._connection, operation, parameters, many
        )  # its thread's queue
        self.description, self.rowcount, self.lastrowid, self._rows = outcome

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        self._rows = []


class _Cursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()

    def _make_new_cursor(self, connection: Any) -> Any:
        return StatementCursor(connection)

    def _aenter_cursor(self, cursor: Any) -> Any:
        return cursor  # nothing to open: no hand-off


class _Connection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _Cursor


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module for SQLAlchemy's aiosqlite dialect, with statements in one trip."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> _Connection:
        connection = aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True  # as the dialect does: never block exit
        return _Connection(self, cast(Any, await_(connection)))
