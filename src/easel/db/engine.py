"""The async engine and session factory for SQLite (embedded) and PostgreSQL (scaled out)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from easel.db.sqlite_driver import OneTripDBAPI

# A pooled connection idle longer than this is pinged before use (PostgreSQL).
PING_IDLE_SECONDS = 1.0
LAST_USED = "easel_last_used"

NOTIFY_CHANNEL = "easel_orders"  # a new order: wakes idle workers
# Every change of an order: its id (migration 0007's trigger), followed by the change feeds
ORDER_CHANGES_CHANNEL = "easel_order_changes"


class Database:
    """Owns the engine; `transaction()` is the one way services get a session."""

    def __init__(
        self, url: str, *, pool_size: int = 10, max_overflow: int = 10, pool_timeout: float = 10.0
    ) -> None:
        """PostgreSQL: `pool_size` connections kept, `max_overflow` more under load, and a
        request that finds none free within `pool_timeout` seconds fails (Busy, 503)."""
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 60}
            kwargs["pool_reset_on_return"] = None  # _sqlite_pragmas rolls back when needed
            if self.url.get_driver_name() == "aiosqlite":
                kwargs["module"] = OneTripDBAPI()  # one hand-off per statement
        else:
            kwargs.update(pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _sqlite_pragmas(self.engine)
        else:
            _ping_idle_connections(self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessions = async_sessionmaker(
            self.engine.execution_options(easel_readonly=True), expire_on_commit=False
        )
        # SQLite has one writer at a time: writers of this process queue here in order instead
        # of polling the file lock through busy_timeout's backoff.
        self._sqlite_writer = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error.

        On SQLite a write transaction holds the write lock from BEGIN; a `readonly` one reads a
        snapshot without blocking writers. Do not open a transaction inside another.
        """
        if readonly:
            async with self.read_sessions() as session, session.begin():
                yield session
        elif self.is_sqlite:
            async with self._sqlite_writer, self.sessions() as session, session.begin():
                yield session
        else:
            async with self.sessions() as session, session.begin():
                yield session

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    # pysqlite's own transaction handling is off; a write transaction takes the write lock at
    # BEGIN, so read-check-write sequences (balance, claim) are serialised across processes.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    # The pool's rollback of every connection it takes back is off: after a commit there is
    # nothing to roll back, and through aiosqlite each rollback is a hand-off to its thread (one
    # per transaction). A connection that comes back inside a transaction is rolled back here.
    @event.listens_for(engine.sync_engine.pool, "reset")
    def _on_reset(dbapi_connection: Any, record: Any, state: Any) -> None:
        if state.asyncio_safe and dbapi_connection.driver_connection.in_transaction:
            dbapi_connection.rollback()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        readonly = conn.get_execution_options().get("easel_readonly")
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """The pool's pre-ping, for connections idle longer than PING_IDLE_SECONDS only: one that
    was in use a moment ago is alive as far as a ping could tell (with asyncpg a ping is three
    round trips, on every transaction of a busy worker). A dead one is replaced and the pool's
    older connections with it, as pre-ping does."""

    @event.listens_for(engine.sync_engine.pool, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[LAST_USED] = time.monotonic()

    dialect = engine.dialect

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        used = record.info.get(LAST_USED)
        if used is None:
            return  # new
        if dbapi_connection.driver_connection.is_closed():  # the server's close was read
            raise InvalidatePoolError("the server closed the connection")
        if time.monotonic() - used <= PING_IDLE_SECONDS:
            return  # back in the pool a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if not dialect.is_disconnect(exc, dbapi_connection, None):
                raise
            raise InvalidatePoolError(f"the connection failed its ping ({exc})") from exc


def is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"
