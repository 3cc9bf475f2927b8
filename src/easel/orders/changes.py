"""The change feed: one per API process, followed by every waiter (event streams, synchronous
waits, long polls), so that the database work of waiting grows with the changes, not the waiters.

Every statement that writes `orders` announces it (migration 0007's triggers, in the writing
transaction). PostgreSQL: the trigger NOTIFYs the order's id on ORDER_CHANGES_CHANNEL and the feed
holds one LISTEN connection. SQLite: the trigger stamps the row with the next `change_seq` and the
feed asks for the rows past the last one it saw, once per `interval`.

One task does all the reading: ids of watched orders that changed (and of waiters that just
joined) are gathered and read in one transaction at most once per `interval` (orders, the outputs
of completed ones, the queue positions of pending ones), then each waiter's `Watch` gets the new
`Snapshot`. A waiter holds no database connection. No change is lost: a waiter that joins is read
in the next batch, after it was registered; when the LISTEN connection drops, the feed listens
again and then reads every watched order once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text

from easel.db.engine import ORDER_CHANGES_CHANNEL, Database
from easel.db.status import FINAL, OrderStatus
from easel.db.tables import Order, Output
from easel.errors import Busy
from easel.orders import lifecycle, queue

log = logging.getLogger(__name__)

SQLITE_TRIGGERS = ("orders_changed_insert", "orders_changed_update")
LISTEN_CHECK_SECONDS = 30.0  # a quiet LISTEN connection is checked this often
MAX_RECONNECT_DELAY = 5.0


@dataclass(frozen=True)
class Snapshot:
    """An order as the feed last read it; `order` None: it no longer exists."""

    order: Order | None
    outputs: list[Output] = field(default_factory=list)  # completed orders only
    position: int | None = None  # pending orders only: 1 is next


class Watch:
    """One waiter's view of one order: the newest snapshot and a wake-up when it changes."""

    def __init__(self, order_id: str | None) -> None:
        self.order_id = order_id
        self.snapshot: Snapshot | None = None
        self.version = 0  # grows with each snapshot handed over
        self.closing = False  # the process is stopping: answer now and end
        self._changed = asyncio.Event()

    def deliver(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.version += 1
        self._changed.set()

    def close(self) -> None:
        self.closing = True
        self._changed.set()

    async def changed(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a new snapshot (or closing); False when none came."""
        if not self._changed.is_set():
            try:  # asyncio.timeout, not wait_for: a cancel that meets a wake-up is never lost
                async with asyncio.timeout(max(0.0, timeout)):
                    await self._changed.wait()
            except TimeoutError:
                return False
        self._changed.clear()
        return True


class ChangeFeed:
    def __init__(self, db: Database, *, interval: float, max_waiters: int) -> None:
        self.db = db
        self.interval = interval
        self.max_waiters = max_waiters
        self.queries = 0  # statements the feed ran, for benchmarks and tests
        self.listens = 0  # LISTEN connections made (PostgreSQL)
        self.closing = False
        self._watches: dict[str, set[Watch]] = {}
        self._unfollowed: set[Watch] = set()  # joined, order not placed yet
        self._to_read: set[str] = set()
        self._queue_moved = False
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started: asyncio.Future[None] | None = None
        self._last_seq = 0
        self._stale = True  # SQLite: nobody waited at the last look; start again from now
        self._running: set[str] = set()  # SQLite: orders last seen running
        self._last_read = 0.0

    @property
    def waiters(self) -> int:
        return sum(len(w) for w in self._watches.values()) + len(self._unfollowed)

    async def start(self) -> None:
        """Start following changes (idempotent; the first watch starts it too)."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                if self.db.is_sqlite:
                    await self._sqlite_begin()
                else:
                    self._tasks.append(asyncio.create_task(self._listen(), name="feed-listen"))
                self._tasks.append(asyncio.create_task(self._run(), name="feed-read"))
            except BaseException:
                self._started.cancel()  # joiners waiting on it fail too
                self._started = None
                raise
            self._started.set_result(None)
        await asyncio.shield(self._started)

    def close(self) -> None:
        """The process is stopping: every waiter answers now (streams say "reconnect"), and no
        new one may join."""
        self.closing = True
        for watches in self._watches.values():
            for watch in watches:
                watch.close()
        for watch in self._unfollowed:
            watch.close()

    async def stop(self) -> None:
        self.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._started = None

    @asynccontextmanager
    async def watch(self, order_id: str | None = None) -> AsyncIterator[Watch]:
        """Follow `order_id` (or, when None, a slot for an order that `follow` names later)
        until the block ends. Busy (503) when the process holds `max_waiters` or is stopping."""
        if self.closing:
            raise Busy("the server is restarting; send the request again", retry_after=1)
        if self.waiters >= self.max_waiters:
            raise Busy(
                f"this server already follows {self.max_waiters} orders for waiting clients "
                "(EASEL_MAX_WAITERS); try again shortly or use another replica",
                retry_after=2,
            )
        await self.start()
        watch = Watch(None)
        self._unfollowed.add(watch)
        try:
            if order_id is not None:
                self.follow(watch, order_id)
            yield watch
        finally:
            self._unfollowed.discard(watch)
            if watch.order_id is not None:
                watches = self._watches.get(watch.order_id)
                if watches is not None:
                    watches.discard(watch)
                    if not watches:
                        del self._watches[watch.order_id]

    def follow(self, watch: Watch, order_id: str) -> None:
        """Start handing `watch` the snapshots of `order_id`, beginning with a fresh read."""
        self._unfollowed.discard(watch)
        watch.order_id = order_id
        self._watches.setdefault(order_id, set()).add(watch)
        self._to_read.add(order_id)
        self._wake.set()
        if self.closing:
            watch.close()

    # -- PostgreSQL: one LISTEN connection ------------------------------------------------

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        order_id, _, flag = payload.partition(" ")
        if flag == "q":
            self._queue_moved = True
        if order_id in self._watches:
            self._to_read.add(order_id)
            self._wake.set()
        elif self._queue_moved and self._watches:
            self._wake.set()

    async def _listen(self) -> None:
        import asyncpg

        dsn = self.db.url.set(drivername="postgresql").render_as_string(hide_password=False)
        delay = 0.1
        while True:
            try:
                conn = await asyncpg.connect(dsn)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning(
                    "change feed cannot listen; retrying",
                    extra={"action": "feed_listen", "error": str(exc), "retry_in": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RECONNECT_DELAY)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())
            try:
                await conn.add_listener(ORDER_CHANGES_CHANNEL, self._notified)
                self.listens += 1
                delay = 0.1
                self._resync()  # what changed while nobody listened
                while not lost.is_set():
                    try:
                        async with asyncio.timeout(LISTEN_CHECK_SECONDS):
                            await lost.wait()
                    except TimeoutError:
                        self.queries += 1
                        await conn.execute("SELECT 1")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning(
                    "change feed's LISTEN connection failed",
                    extra={"action": "feed_listen", "error": str(exc)},
                )
            finally:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=1)
            log.warning(
                "change feed's LISTEN connection was lost; listening again",
                extra={"action": "feed_listen"},
            )

    def _resync(self) -> None:
        self._to_read.update(self._watches)
        self._queue_moved = True
        self._wake.set()

    # -- SQLite: one poller -----------------------------------------------------------------

    async def _sqlite_begin(self) -> None:
        async with self.db.transaction(readonly=True) as session:
            names = set(
                (
                    await session.scalars(
                        text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
                    )
                ).all()
            )
            missing = [t for t in SQLITE_TRIGGERS if t not in names]
        if missing:
            raise RuntimeError(
                f"the orders table lacks the change triggers {missing}: run `easel migrate` "
                "(a migration that rebuilt the table must recreate them)"
            )

    async def _poll(self) -> None:
        """The orders changed since the last look (SQLite): one index range read. After a time
        with nobody waiting, only where the counter is now: the waiters' own reads follow."""
        async with self.db.transaction(readonly=True) as session:
            if self._stale:
                self._last_seq = int(await session.scalar(select(func.max(Order.change_seq))) or 0)
                self.queries += 1
                self._stale, self._queue_moved = False, True
                self._running.clear()
                return
            rows = (
                await session.execute(
                    select(Order.id, Order.status, Order.change_seq)
                    .where(Order.change_seq > self._last_seq)
                    .order_by(Order.change_seq)
                )
            ).all()
        self.queries += 1
        for row in rows:
            self._last_seq = max(self._last_seq, int(row.change_seq))
            if row.id in self._watches:
                self._to_read.add(row.id)
            was_running = row.id in self._running
            if row.status == OrderStatus.RUNNING:
                self._running.add(row.id)
            else:
                self._running.discard(row.id)
            if row.status == OrderStatus.PENDING or not was_running:
                self._queue_moved = True  # entered, left or moved within the queue

    # -- reading ------------------------------------------------------------------------------

    async def _run(self) -> None:
        next_poll = time.monotonic()
        while True:
            try:
                if self.db.is_sqlite:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, next_poll - time.monotonic())):
                            await self._wake.wait()
                else:
                    await self._wake.wait()
                    gap = self._last_read + self.interval - time.monotonic()
                    if gap > 0:  # gather what else changes meanwhile into the same read
                        await asyncio.sleep(gap)
                self._wake.clear()
                if self.db.is_sqlite and (
                    time.monotonic() >= next_poll or (self._stale and self._watches)
                ):
                    next_poll = time.monotonic() + self.interval
                    if self._watches:
                        await self._poll()
                    else:  # nobody waits: no look at all
                        self._stale = True
                await self._read()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("change feed read failed; retrying", extra={"action": "feed_read"})
                await asyncio.sleep(self.interval)

    async def _read(self) -> None:
        ids = sorted(i for i in self._to_read if i in self._watches)
        self._to_read.clear()
        moved, self._queue_moved = self._queue_moved, False
        waiting = (
            [
                i
                for i, watches in self._watches.items()
                if i not in ids and _status(watches) == OrderStatus.PENDING
            ]
            if moved
            else []
        )
        if not ids and not waiting:
            return
        self._last_read = time.monotonic()
        snapshots: dict[str, Snapshot] = {}
        try:
            async with self.db.transaction(readonly=True) as session:
                orders: dict[str, Order] = {}
                if ids:
                    found = await session.scalars(select(Order).where(Order.id.in_(ids)))
                    orders = {o.id: o for o in found}
                    self.queries += 1
                done = [i for i, o in orders.items() if o.status == OrderStatus.COMPLETED]
                outputs: dict[str, list[Output]] = {i: [] for i in done}
                if done:
                    rows = await session.scalars(
                        select(Output)
                        .where(Output.order_id.in_(done), lifecycle.shown())
                        .order_by(Output.order_id, Output.index)
                    )
                    for out in rows:
                        outputs[out.order_id].append(out)
                    self.queries += 1
                pending = [i for i, o in orders.items() if o.status == OrderStatus.PENDING]
                positions: dict[str, int] = {}
                if pending or waiting:
                    positions = await queue.queue_positions(session, pending + waiting)
                    self.queries += 1
        except BaseException:
            self._to_read.update(ids)  # read them again next time
            self._queue_moved = self._queue_moved or moved
            raise
        for i in ids:
            order = orders.get(i)
            snapshots[i] = Snapshot(order, outputs.get(i, []), positions.get(i))
        for i in waiting:
            last = next(iter(self._watches.get(i, ())), None)
            snap = last.snapshot if last is not None else None
            if snap is not None and i in positions and positions[i] != snap.position:
                snapshots[i] = Snapshot(snap.order, snap.outputs, positions[i])
        for i, snapshot in snapshots.items():
            for watch in list(self._watches.get(i, ())):
                watch.deliver(snapshot)


def _status(watches: set[Watch]) -> str | None:
    for watch in watches:
        if watch.snapshot is not None and watch.snapshot.order is not None:
            return watch.snapshot.order.status
    return None


def is_final(snapshot: Snapshot | None) -> bool:
    return snapshot is not None and (snapshot.order is None or snapshot.order.status in FINAL)
