"""webhooks.deliveries against the real database: the account's delivery log with its filters
and limit, manual redelivery, secret rotation, and that none of them commits (SQLite and
PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from easel.api.state import AppState
from easel.clock import utcnow
from easel.db.tables import Account, WebhookDelivery
from easel.errors import NotFound
from easel.orders import lifecycle
from easel.webhooks import deliveries
from tests.support.app import new_account
from tests.support.orders import submit_order

pytestmark = pytest.mark.anyio

HOOK = "http://127.0.0.1:9/hook"


class Abandon(Exception):
    """Raised to roll the test's transaction back."""


@pytest.fixture
def state(app_state: AppState) -> AppState:
    return app_state


async def canceled_with_hook(state: AppState, account: Account) -> str:
    """An order whose cancel writes one delivery (order.canceled); its id."""
    order_id = await submit_order(state, account, webhook_url=HOOK)
    async with state.db.transaction() as s:
        await lifecycle.cancel(s, account.id, order_id, utcnow())
    return order_id


async def logged(
    state: AppState,
    account_id: str,
    limit: int = 50,
    order_id: str | None = None,
    state_is: str | None = None,
) -> list[str]:
    """The order ids of the account's logged deliveries, as listed."""
    async with state.db.transaction(readonly=True) as s:
        rows = await deliveries.list_deliveries(
            s, account_id, limit=limit, order_id=order_id, state=state_is
        )
    return [row.order_id for row in rows]


async def delivery_ids(state: AppState, account_id: str) -> list[str]:
    async with state.db.transaction(readonly=True) as s:
        return [row.id for row in await deliveries.list_deliveries(s, account_id, limit=50)]


async def test_log_is_newest_first_filtered_and_limited(state: AppState) -> None:
    account, _ = await new_account(state, "standard")
    other, _ = await new_account(state, "standard")
    first, second, third = [await canceled_with_hook(state, account) for _ in range(3)]
    async with state.db.transaction() as s:
        await s.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.order_id == second)
            .values(state="delivered", delivered_at=utcnow())
        )
    assert await logged(state, account.id) == [third, second, first]
    assert await logged(state, account.id, limit=2) == [third, second]
    assert await logged(state, account.id, order_id=first) == [first]
    assert await logged(state, account.id, state_is="delivered") == [second]
    assert await logged(state, account.id, state_is="pending") == [third, first]
    assert await logged(state, account.id, order_id=second, state_is="pending") == []
    assert await logged(state, other.id) == []
    async with state.db.transaction(readonly=True) as s:
        [row] = await deliveries.list_deliveries(s, account.id, limit=1, order_id=first)
    assert (row.url, row.event, row.state, row.attempts) == (HOOK, "order.canceled", "pending", 0)


async def test_redeliver_makes_a_delivery_due_again(state: AppState) -> None:
    account, _ = await new_account(state, "standard")
    other, _ = await new_account(state, "standard")
    order_id = await canceled_with_hook(state, account)
    [delivery_id] = await delivery_ids(state, account.id)
    later = utcnow() + timedelta(hours=1)
    async with state.db.transaction() as s:
        await s.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(state="failed", attempts=7, last_status=500, next_attempt_at=later)
        )
    now = utcnow()
    async with state.db.transaction() as s:
        row = await deliveries.redeliver(s, account.id, delivery_id, now)
        assert (row.id, row.order_id) == (delivery_id, order_id)
    async with state.db.transaction(readonly=True) as s:
        row = await s.get(WebhookDelivery, delivery_id)
        assert row is not None
        assert (row.state, row.attempts, row.next_attempt_at) == ("pending", 0, now)
        assert row.last_status == 500  # the last attempt's outcome stays until the next one
    async with state.db.transaction() as s:
        with pytest.raises(NotFound, match=f"no webhook delivery {delivery_id} in this account"):
            await deliveries.redeliver(s, other.id, delivery_id, now)
        with pytest.raises(NotFound, match="no webhook delivery msg_nope in this account"):
            await deliveries.redeliver(s, account.id, "msg_nope", now)


async def secret_of(state: AppState, account_id: str) -> str:
    async with state.db.transaction(readonly=True) as s:
        account = await s.get(Account, account_id)
        assert account is not None
        return account.webhook_secret


async def test_rotate_secret_replaces_it(state: AppState) -> None:
    account, _ = await new_account(state, "standard")
    before = await secret_of(state, account.id)
    async with state.db.transaction() as s:
        rotated = await deliveries.rotate_secret(s, account.id)
    assert rotated.startswith("whsec_") and rotated != before
    assert await secret_of(state, account.id) == rotated
    async with state.db.transaction() as s:
        with pytest.raises(NotFound, match="no account acc_nope"):
            await deliveries.rotate_secret(s, "acc_nope")


async def test_the_caller_keeps_or_drops_the_change(state: AppState) -> None:
    """The services flush and never commit: rolled back with the caller's transaction."""
    account, _ = await new_account(state, "standard")
    await canceled_with_hook(state, account)
    [delivery_id] = await delivery_ids(state, account.id)
    async with state.db.transaction() as s:
        await s.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(state="failed")
        )
    secret = await secret_of(state, account.id)
    with pytest.raises(Abandon):
        async with state.db.transaction() as s:
            row = await deliveries.redeliver(s, account.id, delivery_id, utcnow())
            assert row.state == "pending"
            assert await deliveries.rotate_secret(s, account.id) != secret
            raise Abandon
    async with state.db.transaction(readonly=True) as s:
        row = await s.get(WebhookDelivery, delivery_id)
        assert row is not None and row.state == "failed"
    assert await secret_of(state, account.id) == secret
