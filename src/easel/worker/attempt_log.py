"""The attempt log an upstream backend writes through: each call is its own transaction, so an
attempt row exists before the provider is called and survives the worker."""

from __future__ import annotations

from easel.backends.upstream.base import AttemptRecord, Remote
from easel.catalog import Channel
from easel.clock import utcnow
from easel.db.engine import Database
from easel.orders import attempts


class DatabaseAttemptLog:
    def __init__(self, db: Database, worker_id: str, model_id: str) -> None:
        self.db = db
        self.worker_id = worker_id
        self.model_id = model_id

    async def history(self, order_id: str) -> list[AttemptRecord]:
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

    async def begin(self, order_id: str, number: int, channel: Channel, images: int) -> str:
        async with self.db.transaction() as session:
            row = attempts.begin(
                session,
                order_id=order_id,
                number=number,
                model=self.model_id,
                channel=channel.name,
                provider=channel.provider,
                images=images,
                worker_id=self.worker_id,
                now=utcnow(),
            )
            return row.id

    async def accepted(self, attempt_id: str, remote: Remote) -> None:
        async with self.db.transaction() as session:
            await attempts.accepted(session, attempt_id, remote.remote_id, remote.handle, utcnow())

    async def progress(
        self, attempt_id: str, remote_status: str, queue_position: int | None
    ) -> None:
        async with self.db.transaction() as session:
            await attempts.progress(session, attempt_id, remote_status, queue_position)

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
        async with self.db.transaction() as session:
            await attempts.finish(
                session,
                attempt_id,
                state,
                utcnow(),
                cost=cost,
                error=error,
                retry_after=retry_after,
                outputs=outputs,
            )
