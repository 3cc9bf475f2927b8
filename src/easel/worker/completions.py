"""An order's completion as a worker writes it: with its upstream attempt's success, and in a
group with the others ready at the same time (`GroupCommit`), in a few statements for all."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from easel.clock import utcnow
from easel.db.tables import Order
from easel.orders import attempts, lifecycle
from easel.orders.attempts import AttemptEnd
from easel.worker.group_commit import Mergeable


@dataclass(frozen=True)
class OrderDone(Mergeable):
    """Its result: the completed order, or None when the worker no longer held it (lease lost;
    the attempt's end is written all the same)."""

    worker_id: str
    completion: lifecycle.Completion
    end: AttemptEnd | None = None

    @classmethod
    async def write_all(cls, session: AsyncSession, writes: Sequence[Any]) -> list[Any]:
        now = utcnow()
        mine: dict[str, list[tuple[int, OrderDone]]] = {}
        for index, write in enumerate(writes):
            mine.setdefault(write.worker_id, []).append((index, write))
        done: list[Order | None] = [None] * len(writes)
        for worker_id, group in mine.items():
            items = [w.completion for _, w in group]
            orders = await lifecycle.complete_many(session, worker_id, items, now)
            for (index, _), order in zip(group, orders, strict=True):
                done[index] = order
        await attempts.finish_many(session, [w.end for w in writes if w.end is not None])
        return done
