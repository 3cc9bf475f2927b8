"""Fairness within a priority: accounts take turns, one account's burst does not starve another."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from easel.accounts.accounts import release_running_slot
from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.status import OrderStatus
from easel.db.tables import Order
from easel.orders import queue
from tests.support.app import new_account
from tests.support.catalogs import with_caps
from tests.support.orders import submit_order

pytestmark = pytest.mark.anyio

LEASE = timedelta(seconds=60)


async def claim(state: AppState, **options: object) -> Order | None:
    async with state.db.transaction() as s:
        return await queue.claim_next(s, "w", utcnow(), LEASE, **options)  # type: ignore[arg-type]


async def finish(state: AppState, order: Order) -> None:
    async with state.db.transaction() as s:
        await s.execute(
            update(Order).where(Order.id == order.id).values(status=OrderStatus.COMPLETED)
        )
        await release_running_slot(s, order.account_id)


async def burst(state: AppState, account: object, count: int, style: str = "general") -> list[str]:
    return [await submit_order(state, account, style, prompt=f"a{i}") for i in range(count)]  # type: ignore[arg-type]


async def test_a_single_order_starts_within_max_running_claims_of_a_burst(
    settings: Settings,
) -> None:
    """A submits 200 orders, then B (same plan) submits 1: B's starts within A's running cap's
    number of claims, while A's orders run oldest first around it."""
    state = AppState.build(settings)
    try:
        a, _ = await new_account(state, "standard", topup=1000)
        b, _ = await new_account(state, "standard")
        a_orders = await burst(state, a, 200)
        b_order = await submit_order(state, b, "general", prompt="just one")
        max_running = state.catalog.plans["standard"].max_running
        claimed = []
        for _ in range(max_running):
            order = await claim(state)
            assert order is not None
            claimed.append(order.id)
        assert b_order in claimed
        # A's own orders keep their order.
        rest = []
        while (order := await claim(state)) is not None:
            rest.append(order.id)
            await finish(state, order)
        assert [o for o in claimed + rest if o != b_order] == a_orders
        async with state.db.transaction() as s:
            position_b = await s.scalar(select(Order.fair_seq).where(Order.id == b_order))
        assert position_b == 0  # the head of the queue's clock when it arrived
    finally:
        await state.db.dispose()


async def test_accounts_take_turns_weighted_by_images(settings: Settings, tmp_path: Path) -> None:
    """Three accounts with bursts of different sizes alternate; an order of 3 images counts as
    three turns."""
    state = AppState.build(with_caps(settings, tmp_path, 100))
    try:
        a, _ = await new_account(state, "pro", topup=1000)
        b, _ = await new_account(state, "pro", topup=1000)
        c, _ = await new_account(state, "pro", topup=1000)
        a_orders = await burst(state, a, 6)
        b_orders = await burst(state, b, 3)
        c_big = await submit_order(state, c, "general", prompt="three", n=3)
        c_small = await submit_order(state, c, "general", prompt="one")
        order = []
        while (claimed := await claim(state)) is not None:
            order.append(claimed.id)
        # Turn k: A's k-th, B's k-th, C's order covering it (its 3 images cover turns 0-2).
        assert order == [
            a_orders[0],
            b_orders[0],
            c_big,
            a_orders[1],
            b_orders[1],
            a_orders[2],
            b_orders[2],
            a_orders[3],
            c_small,
            a_orders[4],
            a_orders[5],
        ]
    finally:
        await state.db.dispose()


async def test_an_account_that_drained_its_burst_is_not_held_back(settings: Settings) -> None:
    """After the queue empties, an earlier heavy user and a new one start level."""
    state = AppState.build(settings)
    try:
        a, _ = await new_account(state, "mega")
        b, _ = await new_account(state, "mega")
        for _ in await burst(state, a, 5):
            order = await claim(state)
            assert order is not None
            await finish(state, order)
        b_orders = await burst(state, b, 3)
        a_next = await submit_order(state, a, "general", prompt="again")
        claimed = []
        while (order := await claim(state)) is not None:
            claimed.append(order.id)
        assert claimed == [b_orders[0], a_next, b_orders[1], b_orders[2]]
    finally:
        await state.db.dispose()


async def test_queue_position_follows_the_fair_order(settings: Settings) -> None:
    state = AppState.build(settings)
    try:
        a, _ = await new_account(state, "pro", topup=100)
        b, _ = await new_account(state, "pro")
        a_orders = await burst(state, a, 10)
        b_order = await submit_order(state, b, "general")
        async with state.db.transaction() as s:
            order_b = await s.get_one(Order, b_order)
            order_a_last = await s.get_one(Order, a_orders[-1])
            assert await queue.queue_position(s, order_b) == 2
            assert await queue.queue_position(s, order_a_last) == 11
    finally:
        await state.db.dispose()


async def test_a_served_model_probe_finds_its_orders_behind_others(
    settings: Settings, tmp_path: Path
) -> None:
    """A worker serving one model takes that model's head, however many others come first."""
    state = AppState.build(with_caps(settings, tmp_path, 100))
    try:
        a, _ = await new_account(state, "mega", topup=100)
        await burst(state, a, 30, "general")
        turbo = await submit_order(state, a, "turbo")
        turbo_model = state.catalog.style("turbo")
        assert turbo_model is not None
        order = await claim(state, models=[turbo_model.id])
        assert order is not None and order.id == turbo
        assert await claim(state, models=[turbo_model.id]) is None
    finally:
        await state.db.dispose()


async def test_concurrent_claimers_stay_fair_and_share_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    state = AppState.build(with_caps(settings, tmp_path, 100))
    try:
        accounts = [(await new_account(state, "mega", topup=100))[0] for _ in range(4)]
        made = [await burst(state, account, 10) for account in accounts]

        async def drain() -> list[str]:
            got = []
            while (order := await claim(state)) is not None:
                got.append(order.id)
            return got

        parts = await asyncio.gather(*(drain() for _ in range(6)))
        claimed = [oid for part in parts for oid in part]
        assert sorted(claimed) == sorted(oid for per in made for oid in per)
        async with state.db.transaction() as s:
            rows = (await s.execute(select(Order.id, Order.fair_seq))).all()
        seqs = {oid: seq for oid, seq in rows}
        for per_account in made:
            assert [seqs[o] for o in per_account] == list(range(10))
    finally:
        await state.db.dispose()
