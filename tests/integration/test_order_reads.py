"""orders.reads against the real database: the order listing's keyset pages, its status filter
and outputs, and the lookup by the client's external_task_id (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from easel.api.state import AppState
from easel.clock import utcnow
from easel.db.tables import Account, Order
from easel.errors import NotFound
from easel.orders import lifecycle, queue, reads
from easel.orders.lifecycle import NewOutput
from easel.orders.request import build_request
from easel.orders.submit import submit
from tests.support.app import new_account
from tests.support.orders import submit_order

pytestmark = pytest.mark.anyio


@pytest.fixture
def state(app_state: AppState) -> AppState:
    return app_state


async def page_ids(
    state: AppState, account_id: str, limit: int, before: str | None = None
) -> tuple[list[str], str | None]:
    async with state.db.transaction(readonly=True) as s:
        page = await reads.list_orders(s, account_id, limit=limit, before=before)
    return [order.id for order, _ in page.orders], page.next_before


async def test_pages_run_newest_first_and_end_without_a_cursor(state: AppState) -> None:
    account, _ = await new_account(state, "standard")
    ids = [await submit_order(state, account, prompt=f"p{i}") for i in range(5)]
    newest_first = ids[::-1]
    first, cursor = await page_ids(state, account.id, limit=2)
    assert (first, cursor) == (newest_first[:2], newest_first[1])
    second, cursor = await page_ids(state, account.id, limit=2, before=cursor)
    assert (second, cursor) == (newest_first[2:4], newest_first[3])
    last, cursor = await page_ids(state, account.id, limit=2, before=cursor)
    assert (last, cursor) == (newest_first[4:], None)
    # A page that holds exactly the rest has no cursor either.
    assert await page_ids(state, account.id, limit=5) == (newest_first, None)


async def test_orders_made_in_the_same_instant_page_by_id(state: AppState) -> None:
    account, _ = await new_account(state, "standard")
    ids = [await submit_order(state, account, prompt=f"p{i}") for i in range(4)]
    async with state.db.transaction() as s:
        await s.execute(update(Order).where(Order.id.in_(ids)).values(created_at=utcnow()))
    by_id = sorted(ids, reverse=True)
    first, cursor = await page_ids(state, account.id, limit=3)
    assert first == by_id[:3]
    rest, cursor = await page_ids(state, account.id, limit=3, before=cursor)
    assert (rest, cursor) == (by_id[3:], None)


async def test_status_filter_and_outputs_of_completed_orders(state: AppState) -> None:
    account, _ = await new_account(state, "standard")
    done_id = await submit_order(state, account, prompt="done")
    failed_id = await submit_order(state, account, prompt="failed")
    waiting_id = await submit_order(state, account, prompt="waiting")
    now = utcnow()
    async with state.db.transaction() as s:
        claimed = await queue.claim_next(s, "w1", now, timedelta(seconds=60))
        assert claimed is not None and claimed.id == done_id
        made = [
            NewOutput(i, f"{done_id}/{i}.png", "image/png", 7 + i, 512, 512, 10) for i in (1, 0)
        ]
        assert await lifecycle.complete(s, done_id, "w1", made, now) is not None
        assert await lifecycle.fail(s, failed_id, None, "oom", "out of memory", now) is not None
    async with state.db.transaction(readonly=True) as s:
        page = await reads.list_orders(s, account.id, limit=10)
        assert [(o.id, o.status) for o, _ in page.orders] == [
            (waiting_id, "pending"),
            (failed_id, "failed"),
            (done_id, "completed"),
        ]
        outputs = {o.id: [(out.index, out.seed) for out in outs] for o, outs in page.orders}
        assert outputs == {waiting_id: [], failed_id: [], done_id: [(0, 7), (1, 8)]}
        completed = await reads.list_orders(s, account.id, limit=10, status="completed")
        assert [o.id for o, _ in completed.orders] == [done_id]
        assert completed.next_before is None
        failed = await reads.list_orders(s, account.id, limit=10, status="failed")
        assert [o.id for o, _ in failed.orders] == [failed_id]
        none = await reads.list_orders(s, account.id, limit=10, status="canceled")
        assert (none.orders, none.next_before) == ([], None)


async def test_listing_is_private_and_refuses_a_foreign_cursor(state: AppState) -> None:
    account, _ = await new_account(state, "standard")
    other, _ = await new_account(state, "standard")
    mine = await submit_order(state, account)
    theirs = await submit_order(state, other)
    assert await page_ids(state, account.id, limit=10) == ([mine], None)
    assert await page_ids(state, other.id, limit=10) == ([theirs], None)
    async with state.db.transaction(readonly=True) as s:
        with pytest.raises(NotFound, match=f"no order {theirs} in this account"):
            await reads.list_orders(s, account.id, limit=10, before=theirs)
        with pytest.raises(NotFound, match="no order ORD-nope in this account"):
            await reads.list_orders(s, account.id, limit=10, before="ORD-nope")


async def submit_named(state: AppState, account: Account, dialect: str, external: str) -> str:
    """An order made through `dialect` that the client named `external`."""
    model = state.catalog.style("general")
    assert model is not None
    req = build_request(
        state.settings,
        dialect=dialect,
        model=model,
        model_alias="general",
        product=state.catalog.products[state.catalog.image_product],
        prompt="a lighthouse",
        width=512,
        height=512,
        external_task_id=external,
    )
    async with state.db.transaction() as s:
        order, _ = await submit(s, state.catalog, account, req, utcnow())
    return order.id


async def test_find_by_external_id_within_account_and_dialect(state: AppState) -> None:
    account, _ = await new_account(state, "standard")
    other, _ = await new_account(state, "standard")
    mine = await submit_named(state, account, "kirin", "job-1")
    theirs = await submit_named(state, other, "kirin", "job-1")  # unique per account only
    native = await submit_named(state, account, "native", "job-2")
    async with state.db.transaction(readonly=True) as s:
        assert (await reads.find_by_external_id(s, account.id, "kirin", "job-1")).id == mine
        assert (await reads.find_by_external_id(s, other.id, "kirin", "job-1")).id == theirs
        assert (await reads.find_by_external_id(s, account.id, "native", "job-2")).id == native
        for account_id, dialect, external in (
            (account.id, "kirin", "job-2"),  # made through another dialect
            (other.id, "native", "job-2"),  # another account's
            (account.id, "kirin", "job-3"),  # never made
        ):
            with pytest.raises(NotFound) as caught:
                await reads.find_by_external_id(s, account_id, dialect, external)
            assert caught.value.message == (
                f"no task with external_task_id {external!r} in this account"
            )
