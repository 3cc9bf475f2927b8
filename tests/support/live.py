"""A real server on loopback for synchronous tests (the SDK, the CLI in subprocesses): uvicorn in
one thread, and in another an event loop that hosts the worker (started and stopped at will)
and the test's own handle on the database, for looking behind the API."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any, TypeVar

from sqlalchemy import func, select

from easel.api.state import AppState
from easel.config import Settings
from easel.db.tables import LedgerEntry, Order
from tests.support.app import free_port, new_account, running_server
from tests.support.worker import running_worker

T = TypeVar("T")


class LoopThread:
    """An event loop in a daemon thread; `call` runs a coroutine there and returns its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class Live:
    """The server at `base_url`, its worker (running unless stopped) and the test's state."""

    def __init__(self, settings: Settings, base_url: str, loop: LoopThread) -> None:
        self.settings = settings
        self.base_url = base_url
        self.loop = loop
        self.state = AppState.build(settings)
        self._worker: AbstractAsyncContextManager[Any] | None = None

    def account(self, plan: str = "standard", topup: int = 0) -> tuple[str, str]:
        """A new account's (id, API key)."""
        account, key = self.loop.call(new_account(self.state, plan, topup))
        return account.id, key

    def start_worker(self) -> None:
        if self._worker is None:
            self._worker = running_worker(self.state)
            self.loop.call(self._worker.__aenter__())

    def stop_worker(self) -> None:
        if self._worker is not None:
            worker, self._worker = self._worker, None
            self.loop.call(worker.__aexit__(None, None, None))

    @contextmanager
    def worker_stopped(self) -> Iterator[None]:
        """No worker inside the block: orders stay pending."""
        self.stop_worker()
        try:
            yield
        finally:
            self.start_worker()

    def orders_and_debits(self, account_id: str) -> tuple[int, int]:
        """How many orders the account has, and how many debits its ledger holds."""

        async def count() -> tuple[int, int]:
            async with self.state.db.transaction(readonly=True) as session:
                orders = await session.scalar(
                    select(func.count()).select_from(Order).where(Order.account_id == account_id)
                )
                debits = await session.scalar(
                    select(func.count())
                    .select_from(LedgerEntry)
                    .where(LedgerEntry.account_id == account_id, LedgerEntry.kind == "debit")
                )
            return int(orders or 0), int(debits or 0)

        return self.loop.call(count())

    def close(self) -> None:
        self.stop_worker()
        self.loop.call(self.state.db.dispose())


@contextmanager
def live_server(settings: Settings, worker: bool = True) -> Iterator[Live]:
    """A server for `settings` on a free loopback port, with a worker unless not `worker`."""
    settings = settings.model_copy(update={"host": "127.0.0.1", "port": free_port()})
    loop = LoopThread()
    try:
        with running_server(settings) as base:
            live = Live(settings, base, loop)
            try:
                if worker:
                    live.start_worker()
                yield live
            finally:
                live.close()
    finally:
        loop.close()
