"""Group commit: writes that become ready while a write transaction is in progress (or while the
writer waits to begin one: SQLite's writer lock) wait for it and are then written together, in
one transaction (one commit, one turn of SQLite's writer lock).

One writer task drains a queue; each caller awaits the outcome of its own write. A write is a
function of a session; it must not change anything outside the database, because it may run
twice: when a group fails (a database error, one write's exception) nothing of it was committed,
and each of its writes is run again alone, so an error reaches only the caller whose write
raised it. A write that fails alone fails its caller, as its own transaction would have.

A `Mergeable` write is written with the others of its class in the group at once, in a few
statements for all of them rather than a few for each (`write_all`). A group's writes must not
depend on one another's order: the plain ones run first, in turn, then each class of mergeable
ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from easel.db.engine import Database

log = logging.getLogger(__name__)

T = TypeVar("T")
Write = Callable[[AsyncSession], Awaitable[Any]]
Item = tuple[Write, "asyncio.Future[Any]"]


class Mergeable:
    """A write of a kind that is written together with the others of its class in a group."""

    @classmethod
    async def write_all(cls, session: AsyncSession, writes: Sequence[Any]) -> list[Any]:
        """Write `writes` (instances of this class); each one's result, in their order."""
        raise NotImplementedError

    async def __call__(self, session: AsyncSession) -> Any:
        [result] = await type(self).write_all(session, [self])
        return result


class GroupCommit:
    def __init__(self, db: Database, max_group: int) -> None:
        """`max_group`: at most this many writes in one transaction (EASEL_GROUP_COMMIT_MAX)."""
        self.db = db
        self.max_group = max(1, max_group)
        self._waiting: list[Item] = []
        self._writer: asyncio.Task[None] | None = None
        self.groups = 0  # transactions committed, for tests and logs

    async def write(self, write: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `write` in the next group's transaction; its result once that has committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append((write, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def close(self) -> None:
        """Wait for the writes already queued."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _drain(self) -> None:
        while self._waiting:
            group: list[Item] = []
            try:
                results = await self._run(group, take=True)
            except asyncio.CancelledError:  # the loop is going away: so are the callers
                for _, future in group + self._waiting:
                    future.cancel()
                raise
            except Exception as exc:
                if len(group) <= 1:  # none taken: the transaction did not begin; fail those
                    for _, future in group or self._take():
                        _settle(future, exc=exc)
                    continue
                log.warning(
                    "a group of %d writes failed (%s); writing each alone",
                    len(group),
                    type(exc).__name__,
                    extra={"action": "group_commit_retry"},
                )
                for item in group:
                    try:
                        [result] = await self._run([item])
                    except Exception as one:
                        _settle(item[1], exc=one)
                    else:
                        _settle(item[1], result=result)
                continue
            for (_, future), result in zip(group, results, strict=True):
                _settle(future, result=result)

    async def _run(self, group: list[Item], *, take: bool = False) -> list[Any]:
        """`take`: fill `group` from the queue once the transaction has begun (on SQLite, once
        it holds the writer lock), so that writes queued while it waited go in it too."""
        async with self.db.transaction() as session:
            if take:
                await session.connection()  # begun (the session's own BEGIN is lazy)
                group.extend(self._take())
            results: list[Any] = [None] * len(group)
            kinds: dict[type[Mergeable], list[int]] = {}
            for index, (write, _) in enumerate(group):
                if isinstance(write, Mergeable):
                    kinds.setdefault(type(write), []).append(index)
                else:
                    results[index] = await write(session)
            for kind, indexes in kinds.items():
                written = await kind.write_all(session, [group[i][0] for i in indexes])
                for index, result in zip(indexes, written, strict=True):
                    results[index] = result
        if group:
            self.groups += 1
        return results

    def _take(self) -> list[Item]:
        group = self._waiting[: self.max_group]
        del self._waiting[: self.max_group]
        return [(w, f) for w, f in group if not f.done()]  # a caller gone: not written


def _settle(
    future: asyncio.Future[Any], *, result: Any = None, exc: BaseException | None = None
) -> None:
    if future.done():  # its caller was cancelled; the write stands (or failed) all the same
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
