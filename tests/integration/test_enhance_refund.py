"""An llm_enhance order whose enhancement was skipped (enhancer off, or an enhanced prompt that
matches the content policy list) gets its enhance credits back once, in its own ledger kind: the
order's own prompt is used, and a later blocked-image or full refund still gives the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update

from easel.accounts import ledger
from easel.clock import utcnow
from easel.config import Settings
from easel.db.status import OrderStatus
from easel.db.tables import LedgerEntry, Order
from easel.orders import lifecycle
from easel.worker.runner import Worker
from tests.support.app import app_client, new_account
from tests.support.chat_server import chat_server
from tests.support.orders import submit_order

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


async def enhance(worker: Worker, state: object, order_id: str) -> dict[str, tuple[str, str]]:
    """The worker's enhancement step for one order it holds."""
    async with worker.db.transaction() as session:
        await session.execute(
            update(Order)
            .where(Order.id == order_id)
            .values(status=OrderStatus.RUNNING, worker_id=worker.worker_id)
        )
        order = await session.get(Order, order_id)
        assert order is not None
    model = worker.catalog.models[order.model]
    return await worker._enhance(model, [order])


async def rows(worker: Worker, order_id: str) -> list[tuple[str, int]]:
    async with worker.db.transaction() as session:
        found = await session.execute(
            select(LedgerEntry.kind, LedgerEntry.amount).where(LedgerEntry.order_id == order_id)
        )
        return sorted((kind, amount) for kind, amount in found.all())


async def test_skipped_enhancement_is_refunded_once(settings: Settings, tmp_path: Path) -> None:
    operator = tmp_path / "catalog.toml"
    operator.write_text(
        '[plans.pro]\nenhance_credits = 2\n[safety]\nextra_terms = ["golden hour"]\n'
    )
    with chat_server() as server:
        listed_settings = settings.model_copy(
            update={"catalog": operator, "enhancer": "openai", "enhancer_base_url": server.url}
        )
        async with app_client(listed_settings) as (_client, state):
            account, _ = await new_account(state, "pro")
            worker = Worker(state.settings, state.catalog, state.db, state.storage)
            listed_id = await submit_order(state, account, llm_enhance=True, n=2)
            used = await enhance(worker, state, listed_id)
            await enhance(worker, state, listed_id)  # a retry after a lost lease
            async with state.db.transaction() as session:
                order = await session.get(Order, listed_id)
                assert order is not None
                status, note = order.enhance_status, order.enhance_note
                await ledger.refund_part(session, listed_id, 1, utcnow(), "one image blocked")
                await lifecycle.fail(session, listed_id, worker.worker_id, "x", "x", utcnow())
            listed_rows = await rows(worker, listed_id)
            await worker.enhancing.aclose()
    off_settings = settings.model_copy(update={"catalog": operator, "enhancer": "off"})
    async with app_client(off_settings) as (_client, state):
        account, _ = await new_account(state, "pro")
        worker = Worker(state.settings, state.catalog, state.db, state.storage)
        off_id = await submit_order(state, account, llm_enhance=True)
        assert await enhance(worker, state, off_id) == {}
        off_rows = await rows(worker, off_id)
    assert used == {}  # the enhanced prompt says "golden hour": the order's own prompt is used
    assert (status, note) == ("skipped", "content policy: the enhanced prompt matches the list")
    assert len(server.requests) == 1  # the retry came from the cache
    assert listed_rows == [("debit", -4), ("refund", 1), ("refund_enhance", 2), ("refund_part", 1)]
    assert off_rows == [("debit", -3), ("refund_enhance", 2)]
