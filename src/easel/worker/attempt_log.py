"""The attempt log an upstream backend writes through: each call is its own transaction, so an
attempt row exists before the provider is called and survives the worker.

Less is written and read per order than one transaction per call: an order on its first claim
has no attempts yet (the worker names those in `first_claims`, so `history` does not read); the
row's created_at is kept from `begin` until its `finish` (one UPDATE, no read); a synchronous
provider's acceptance is written with the finish; and a success is handed to the worker
(`successes`), which writes it in the transaction that completes (or fails) the order. Until
then the row says `submitting` or `accepted`, which a later run treats as it would a success
whose order was not completed: it polls the job again or leaves the channel. An order's first
try on its first claim may have its row written by the claim itself (`planned`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from easel.backends.upstream.base import AttemptRecord, Remote
from easel.catalog import Channel
from easel.clock import utcnow
from easel.db.engine import Database
from easel.orders import attempts
from easel.orders.attempts import AttemptEnd
from easel.worker.group_commit import GroupCommit, Mergeable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttemptBegin(Mergeable):
    """An attempt row begun, written with the others begun at the same time."""

    row: attempts.NewAttempt

    @classmethod
    async def write_all(cls, session: AsyncSession, writes: Sequence[Any]) -> list[Any]:
        return list(await attempts.begin_many(session, [w.row for w in writes]))


@dataclass(frozen=True)
class PlannedAttempt:
    """An order's first try, its `submitting` row written in the claim's transaction."""

    attempt_id: str
    model: str
    channel: str
    created_at: datetime


class DatabaseAttemptLog:
    def __init__(
        self,
        db: Database,
        worker_id: str,
        model_id: str,
        first_claims: set[str] | None = None,
        successes: dict[str, AttemptEnd] | None = None,
        writes: GroupCommit | None = None,
        planned: dict[str, PlannedAttempt] | None = None,
    ) -> None:
        """`first_claims`: the worker's set of order ids it holds on their first claim (no
        earlier run can have written an attempt for them). `successes`: where a succeeded
        attempt's end is left for the worker, by order id (None: written at once). `writes`:
        the worker's group commit, which writes the attempt rows begun together (None: each
        in its own transaction); `begin` returns once its row is committed all the same.
        `planned`: the worker's first tries whose rows its claim wrote, by order id."""
        self.db = db
        self.worker_id = worker_id
        self.model_id = model_id
        self.first_claims = set() if first_claims is None else first_claims
        self.successes = successes
        self.writes = writes
        self.planned = {} if planned is None else planned  # the worker's, by order id
        self._begun: dict[str, tuple[str, datetime]] = {}  # attempt id -> (order id, created_at)
        # attempt id -> an acceptance written with the finish (`accepted(..., deferred=True)`)
        self._accepted: dict[str, tuple[str, dict[str, Any], datetime]] = {}

    async def history(self, order_id: str) -> list[AttemptRecord]:
        if order_id in self.first_claims:
            self.first_claims.discard(order_id)
            return []
        async with self.db.transaction(readonly=True) as session:
            rows = await attempts.history(session, order_id)
            return [
                AttemptRecord(
                    id=r.id,
                    order_id=r.order_id,
                    number=r.number,
                    channel=r.channel,
                    provider=r.provider,
                    state=r.state,
                    remote_id=r.remote_id,
                    handle=dict(r.handle or {}),
                    error=r.error,
                    created_at=r.created_at,
                )
                for r in rows
            ]

    def take_planned(self, order_id: str) -> tuple[str, str] | None:
        found = self.planned.pop(order_id, None)
        if found is None:
            return None
        # its latency counts from now, as a try begun here would (not from the claim)
        self._begun[found.attempt_id] = (order_id, utcnow())
        return found.attempt_id, found.channel

    async def discard(self, attempt_id: str) -> None:
        self._begun.pop(attempt_id, None)
        async with self.db.transaction() as session:
            await attempts.discard(session, [attempt_id])

    async def begin(self, order_id: str, number: int, channel: Channel, images: int) -> str:
        now = utcnow()
        row = attempts.NewAttempt(
            order_id,
            number,
            self.model_id,
            channel.name,
            channel.provider,
            images,
            self.worker_id,
            now,
        )
        if self.writes is not None:
            attempt_id: str = await self.writes.write(AttemptBegin(row))
        else:
            async with self.db.transaction() as session:
                [attempt_id] = await attempts.begin_many(session, [row])
        self._begun[attempt_id] = (order_id, now)
        return attempt_id

    async def accepted(self, attempt_id: str, remote: Remote, *, deferred: bool = False) -> bool:
        if deferred:
            self._accepted[attempt_id] = (remote.remote_id, dict(remote.handle), utcnow())
            return True
        async with self.db.transaction() as session:
            return await attempts.accepted(
                session, attempt_id, remote.remote_id, remote.handle, utcnow()
            )

    def forget(self, attempt_id: str) -> None:
        self._begun.pop(attempt_id, None)
        self._accepted.pop(attempt_id, None)

    async def progress(
        self, attempt_id: str, remote_status: str, queue_position: int | None
    ) -> None:
        """The provider's word on the job, for the operator: a database error is logged and the
        job followed on (the next change is written again)."""
        try:
            async with self.db.transaction() as session:
                await attempts.progress(session, attempt_id, remote_status, queue_position)
        except (DBAPIError, OSError):
            log.warning(
                "could not record the job's status",
                extra={"action": "upstream_progress_error", "attempt_id": attempt_id},
            )

    async def finish(
        self,
        attempt_id: str,
        state: str,
        *,
        cost: float = 0.0,
        error: str | None = None,
        retry_after: float | None = None,
        outputs: list[str] | None = None,
    ) -> None:
        order_id, created_at = self._begun.pop(attempt_id, ("", None))
        end = AttemptEnd(
            attempt_id,
            state,
            utcnow(),
            created_at=created_at,
            cost=cost,
            error=error,
            retry_after=retry_after,
            outputs=list(outputs or []),
            remote=self._accepted.pop(attempt_id, None),
        )
        if state == "succeeded" and order_id and self.successes is not None:
            self.successes[order_id] = end
            return
        async with self.db.transaction() as session:
            await end.write(session)
