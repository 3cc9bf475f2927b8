"""Batch claims: compatible followers, image room, running caps, loaded-model preference and the
model filter, on SQLite and PostgreSQL, with concurrent claimers."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.tables import Account, Order
from easel.orders import queue
from tests.support.app import new_account
from tests.support.catalogs import with_caps
from tests.support.orders import submit_order

pytestmark = pytest.mark.anyio

LEASE = timedelta(seconds=60)


async def claim_batch(
    state: AppState, worker: str, max_images: int = 8, **options: Any
) -> list[str]:
    """Leader then followers, each in its own transaction, as the worker does."""
    async with state.db.transaction() as s:
        leader = await queue.claim_next(s, worker, utcnow(), LEASE, **options)
    if leader is None:
        return []
    async with state.db.transaction() as s:
        followers = await queue.claim_followers(
            s, leader, worker, utcnow(), LEASE, max_images - leader.n
        )
    return [leader.id, *(f.id for f in followers)]


async def place(state: AppState, account: Account, style: str = "turbo", **columns: Any) -> str:
    """An order through the submit service, then `columns` written over its row."""
    fields = {k: columns.pop(k) for k in ("n", "steps", "output_format") if k in columns}
    order_id = await submit_order(state, account, style, **fields)
    if columns:
        async with state.db.transaction() as s:
            await s.execute(update(Order).where(Order.id == order_id).values(**columns))
    return order_id


async def test_followers_match_the_leader_in_everything_the_pipeline_shares(
    settings: Settings,
) -> None:
    state = AppState.build(settings)
    try:
        a, _ = await new_account(state, "pro")
        b, _ = await new_account(state, "pro")
        leader = await place(state, a)
        same_other_account = await place(state, b)
        await place(state, a, width=768)
        await place(state, b, height=640)
        await place(state, a, steps=3)
        await place(state, b, guidance=1.5)
        await place(state, a, acceleration="high")
        await place(state, b, output_format="jpeg")
        await place(state, a, frames=16)
        await place(state, b, "general")
        await place(state, a, reference_key="x/reference.png")
        await place(state, b, reference_key="y/reference.png", strength=0.3)
        same_later = await place(state, b, strength=0.3)  # strength only matters with a reference
        await place(state, a, loras='[{"name":"ink","scale":0.8}]')
        await place(state, b, loras='[{"name":"ink","scale":0.5}]')
        assert await claim_batch(state, "w1") == [leader, same_other_account, same_later]
    finally:
        await state.db.dispose()


async def test_image_to_image_batches_only_with_references_of_the_same_strength(
    settings: Settings,
) -> None:
    state = AppState.build(settings)
    try:
        a, _ = await new_account(state, "pro")
        leader = await place(state, a, reference_key="a/reference.png", strength=0.5)
        await place(state, a)
        await place(state, a, reference_key="b/reference.png", strength=0.7)
        same_strength = await place(state, a, reference_key="c/reference.png", strength=0.5)
        assert await claim_batch(state, "w1") == [leader, same_strength]
        plain = await claim_batch(state, "w2")
        assert len(plain) == 1  # the text-to-image one, alone
    finally:
        await state.db.dispose()


async def test_only_orders_with_the_same_lora_set_batch_together(settings: Settings) -> None:
    state = AppState.build(settings)
    try:
        a, _ = await new_account(state, "pro")
        b, _ = await new_account(state, "pro")
        ink = '[{"name":"ink","scale":0.8}]'
        leader = await place(state, a, loras=ink)
        await place(state, b)  # no LoRA
        await place(state, a, loras='[{"name":"ink","scale":0.8},{"name":"paper","scale":1.0}]')
        same_set = await place(state, b, loras=ink)
        assert await claim_batch(state, "w1") == [leader, same_set]
        assert len(await claim_batch(state, "w2")) == 1  # the one without, alone
        assert len(await claim_batch(state, "w3")) == 1  # the two-LoRA one, alone
    finally:
        await state.db.dispose()


async def test_followers_fit_the_image_room_and_the_running_caps(settings: Settings) -> None:
    state = AppState.build(settings)
    try:
        pro, _ = await new_account(state, "pro")  # priority 3, 4 running at most
        std, _ = await new_account(state, "standard")  # priority 2, 2 running at most
        p1 = await place(state, pro, n=3)
        p2 = await place(state, pro, n=1)
        s1, s2, _waits = [await place(state, std, n=1) for _ in range(3)]
        # Room 5 after the leader's 3 images; the standard account may run two orders.
        assert await claim_batch(state, "w1") == [p1, p2, s1, s2]
        async with state.db.transaction() as s:
            counts = dict((await s.execute(select(Account.id, Account.running_count))).all())
        assert (counts[pro.id], counts[std.id]) == (2, 2)
        assert await claim_batch(state, "w2") == []  # the third waits for a slot

        big = await place(state, pro, n=3)
        small = await place(state, pro, n=1)
        # Room 1 after `big`: the next in line fits; a follower that does not fit ends the batch.
        assert await claim_batch(state, "w3", max_images=4) == [big, small]
    finally:
        await state.db.dispose()


async def test_a_follower_too_big_for_the_room_ends_the_batch(settings: Settings) -> None:
    state = AppState.build(settings)
    try:
        a, _ = await new_account(state, "pro")
        leader = await place(state, a, n=2)
        first = await place(state, a, n=2)
        await place(state, a, n=2)  # would make 6 > 5
        await place(state, a, n=1)  # fits alone, but comes after the one that did not
        assert await claim_batch(state, "w1", max_images=5) == [leader, first]
    finally:
        await state.db.dispose()


async def test_concurrent_batch_claimers_share_nothing_and_keep_caps(
    settings: Settings, tmp_path: Path
) -> None:
    state = AppState.build(with_caps(settings, tmp_path, 5))
    try:
        accounts = [(await new_account(state, "pro"))[0] for _ in range(4)]
        made = [await place(state, acct) for _ in range(8) for acct in accounts]

        async def drain(worker: str) -> list[list[str]]:
            batches = []
            while batch := await claim_batch(state, worker, max_images=3):
                batches.append(batch)
            return batches

        results = await asyncio.gather(*(drain(f"w{i}") for i in range(6)))
        claimed = [oid for batches in results for batch in batches for oid in batch]
        assert len(claimed) == len(set(claimed)) == 4 * 5  # each account up to its cap
        assert set(claimed) <= set(made)
        assert max(len(b) for batches in results for b in batches) > 1
        async with state.db.transaction() as s:
            counts = list(await s.scalars(select(Account.running_count)))
            rows = (
                await s.execute(select(Order.id, Order.worker_id).where(Order.status == "running"))
            ).all()
        assert sorted(counts) == [5, 5, 5, 5]
        owner = {oid: f"w{i}" for i, batches in enumerate(results) for b in batches for oid in b}
        assert {oid: worker for oid, worker in rows} == owner
    finally:
        await state.db.dispose()


async def test_claim_prefers_loaded_models_within_a_priority_only(settings: Settings) -> None:
    state = AppState.build(settings)
    try:
        pro, _ = await new_account(state, "pro")
        mega, _ = await new_account(state, "mega")
        old_general = await place(state, pro, "general")
        new_turbo = await place(state, pro, "turbo")
        options = {"loaded": ["sdxl-turbo"], "prefer_loaded_for": timedelta(minutes=5)}
        assert await claim_batch(state, "w1", max_images=1, **options) == [new_turbo]

        new_turbo = await place(state, pro, "turbo")
        # Waiting longer than prefer_loaded_for: the old order goes first again.
        passed_over = {"loaded": ["sdxl-turbo"], "prefer_loaded_for": timedelta(0)}
        assert await claim_batch(state, "w2", max_images=1, **passed_over) == [old_general]

        mega_general = await place(state, mega, "general")
        # Plan priority beats a loaded model.
        assert await claim_batch(state, "w3", max_images=1, **options) == [mega_general]
        assert await claim_batch(state, "w4", max_images=1, **options) == [new_turbo]
    finally:
        await state.db.dispose()


async def test_claim_only_takes_the_workers_models(settings: Settings) -> None:
    state = AppState.build(settings)
    try:
        pro, _ = await new_account(state, "pro")
        general = await place(state, pro, "general")
        turbo = await place(state, pro, "turbo")
        assert await claim_batch(state, "w1", models=["sdxl-anime"]) == []
        assert await claim_batch(state, "w1", models=["sdxl-turbo"]) == [turbo]
        assert await claim_batch(state, "w1", models=["sdxl-turbo"]) == []
        assert await claim_batch(state, "w1", models=["sdxl-anime", "sdxl-general"]) == [general]
    finally:
        await state.db.dispose()


async def test_orders_with_several_images_or_a_mask_run_alone(settings: Settings) -> None:
    """An edit of several images or an inpainting (orders.inputs) is never a follower, and as a
    leader claims none: one set of inputs per pipeline call."""
    state = AppState.build(settings)
    try:
        a, _ = await new_account(state, "pro")
        masked = '{"images": [], "mask": "m/mask.png"}'
        leader = await place(state, a, reference_key="a/reference.png", strength=0.5)
        await place(state, a, reference_key="b/reference.png", strength=0.5, inputs=masked)
        same = await place(state, a, reference_key="c/reference.png", strength=0.5)
        assert await claim_batch(state, "w1") == [leader, same]
        alone = await claim_batch(state, "w2")
        assert len(alone) == 1  # the masked one
        first = await place(state, a, reference_key="d/reference.png", strength=0.5, inputs=masked)
        await place(state, a, reference_key="e/reference.png", strength=0.5)
        assert await claim_batch(state, "w3") == [first]
    finally:
        await state.db.dispose()
