"""An upstream attempt's success is written with the order's end; if that transaction does not
commit, the success is still there for the write that follows (the attempt does not stay open)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, exc

from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.tables import Order, OrderAttempt
from easel.orders import attempts, queue
from easel.orders.attempts import AttemptEnd, NewAttempt
from easel.worker.runner import Worker
from tests.support.app import new_account
from tests.support.orders import submit_order

pytestmark = pytest.mark.anyio


async def test_a_success_outlives_a_failed_commit_of_the_orders_end(
    settings: Settings, tmp_path: Path
) -> None:
    state = AppState.build(settings.model_copy(update={"worker_id": "w-review"}))
    try:
        worker = Worker(state.settings, state.catalog, state.db, state.storage)
        account, _ = await new_account(state, "mega")
        order_id = await submit_order(state, account, "turbo")
        async with state.db.transaction() as s:
            order = await queue.claim_next(s, worker.worker_id, utcnow(), timedelta(seconds=60))
            assert order is not None and order.id == order_id
            catalog_model = order.model
        now = utcnow()
        async with state.db.transaction() as s:  # the attempt as the upstream backend left it
            row = NewAttempt(order_id, 1, catalog_model, "c1", "fal", 1, worker.worker_id, now)
            [attempt_id] = await attempts.begin_many(s, [row])
            await attempts.accepted(s, attempt_id, "remote-1", {}, now)
        # what DatabaseAttemptLog.finish("succeeded") hands to the worker
        worker._successes[order_id] = AttemptEnd(
            attempt_id, "succeeded", utcnow(), created_at=now, cost=0.04
        )

        fail_commit = {"on": True}

        @event.listens_for(state.db.engine.sync_engine, "commit")
        def _boom(conn: object) -> None:
            if fail_commit["on"]:
                fail_commit["on"] = False
                raise exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))

        await worker._end(order_id, "generation_failed", "saving failed")  # logs end_error
        await worker._settle_alone([order_id])  # process's finally
        async with state.db.transaction(readonly=True) as s:
            row = await s.get(OrderAttempt, attempt_id)
            still = await s.get(Order, order_id)
        assert still is not None and still.status == "running"  # the end was rolled back
        assert row is not None
        assert row.state == "succeeded", f"attempt left {row.state!r}"
        assert row.cost == 0.04
    finally:
        await state.db.dispose()
