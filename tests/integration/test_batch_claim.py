"""Batch claims: compatible followers, image room, running caps, loaded-model preference and the
model filter, on SQLite and PostgreSQL, with concurrent claimers."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update

from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.tables import Account, Order, OrderAttempt
from easel.orders import queue
from easel.orders.request import build_request
from easel.orders.submit import submit
from easel.worker.runner import Worker
from tests.support import providers
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


NOWHERE = "http://127.0.0.1:9/v1"  # the orders are only claimed here


async def submit_upstream(state: AppState, account: Account, model_id: str, prompt: str) -> str:
    req = build_request(
        state.settings,
        dialect="native",
        model=state.catalog.models[model_id],
        model_alias=model_id,
        product=state.catalog.products["static_image"],
        prompt=prompt,
        width=256,
        height=256,
    )
    async with state.db.transaction() as session:
        order, _ = await submit(session, state.catalog, account, req, utcnow())
    return order.id


def upstream_settings(settings: Settings, tmp_path: Path, cap: int, in_flight: int) -> Settings:
    """Two upstream models of `in_flight` each (nothing listens at their channels), plans with
    a running cap of `cap`."""
    channels = "".join(
        providers.upstream_model(
            m,
            providers.channel_table(
                m, "openai", "http://127.0.0.1:9/v1", "m", max_in_flight=in_flight
            ),
        )
        for m in ("up-a", "up-b")
    )
    path = tmp_path / "upstream.toml"
    path.write_text(
        channels
        + "".join(
            f"[plans.{p}]\nmax_running = {cap}\n" for p in ("free", "standard", "pro", "mega")
        )
    )
    return settings.model_copy(update={"catalog": path, "remote_claim_max": 4})


async def remote_worker(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cap: int, in_flight: int
) -> tuple[AppState, Worker, Account, Account]:
    """A worker of the two upstream models, and two accounts on the pro plan."""
    monkeypatch.setenv("EASEL_TEST_PROVIDER_KEY", providers.KEY)  # the channels' credential
    state = AppState.build(upstream_settings(settings, tmp_path, cap=cap, in_flight=in_flight))
    worker = Worker(state.settings, state.catalog, state.db, state.storage)
    a, _ = await new_account(state, "pro")
    b, _ = await new_account(state, "pro")
    return state, worker, a, b


async def test_remote_orders_are_claimed_several_to_a_transaction_within_room_and_caps(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, worker, a, b = await remote_worker(settings, tmp_path, monkeypatch, 5, 3)
    try:
        ids = [await submit_upstream(state, a, "up-a", f"a{i}") for i in range(4)]
        ids += [await submit_upstream(state, b, "up-b", f"b{i}") for i in range(4)]
        commits = 0

        @event.listens_for(state.db.engine.sync_engine, "commit")
        def counted(_conn: object) -> None:
            nonlocal commits
            commits += 1

        first = await worker.claim()
        assert commits == 1
        # each remote order is a batch of its own; the first transaction stops at 4 orders
        assert [len(batch) for batch in first] == [1, 1, 1, 1]
        assert all(o.status == "running" for batch in first for o in batch)
        for batch in first:
            worker._in_flight[batch[0].model] += 1
        second = await worker.claim()
        taken = [o for batch in first + second for o in batch]
        # up-a has room for 3 (max_in_flight), so does up-b: 6 in all, whatever the claim size
        assert sorted(o.model for o in taken) == ["up-a"] * 3 + ["up-b"] * 3
        assert len({o.id for o in taken}) == 6 and {o.id for o in taken} <= set(ids)
        assert worker._first_claims == {o.id for o in taken}
        for batch in second:
            worker._in_flight[batch[0].model] += 1
        room = worker._claimable()
        assert room is not None and not {"up-a", "up-b"} & set(room)  # both full
    finally:
        await state.db.dispose()


async def test_claiming_several_remote_orders_keeps_each_accounts_running_cap(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, worker, a, b = await remote_worker(settings, tmp_path, monkeypatch, 1, 10)
    try:
        for i in range(3):
            await submit_upstream(state, a, "up-a", f"a{i}")
            await submit_upstream(state, b, "up-a", f"b{i}")
        taken = [o for batch in await worker.claim() for o in batch]
        assert sorted(o.account_id for o in taken) == sorted([a.id, b.id])
        async with state.db.transaction(readonly=True) as s:
            counts = list(await s.scalars(select(Account.running_count)))
        assert sorted(counts) == [1, 1]
    finally:
        await state.db.dispose()


async def test_a_further_remote_claim_stops_at_an_account_another_transaction_holds(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: the leader's claim holds its account's row; a further claim in the same
    transaction that would wait for another account's row stops there, so two claimers (or a
    claimer and a group of completions) never wait on each other."""
    state, worker, a, b = await remote_worker(settings, tmp_path, monkeypatch, 10, 10)
    if state.db.is_sqlite:
        await state.db.dispose()
        pytest.skip("SQLite has one writer at a time: no row locks to wait for")
    try:
        first = await submit_upstream(state, a, "up-a", "a0")
        for i in range(3):
            await submit_upstream(state, b, "up-a", f"b{i}")
        async with state.db.transaction() as other:  # holds b's account row
            await other.execute(select(Account).where(Account.id == b.id).with_for_update())
            claimed = await asyncio.wait_for(worker.claim(), timeout=10)
        assert [[o.id for o in batch] for batch in claimed] == [[first]]
        again = await worker.claim()  # b's row is free now
        assert sorted(o.account_id for batch in again for o in batch) == [b.id] * 3
    finally:
        await state.db.dispose()


async def attempt_rows(state: AppState) -> list[OrderAttempt]:
    async with state.db.transaction(readonly=True) as s:
        return list(await s.scalars(select(OrderAttempt).order_by(OrderAttempt.order_id)))


async def test_the_claim_writes_each_upstream_orders_first_try(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One write transaction fewer per order: the first try's `submitting` row is committed
    with the claim, before any provider is called."""
    state, worker, a, _ = await remote_worker(settings, tmp_path, monkeypatch, 10, 10)
    try:
        ids = [await submit_upstream(state, a, "up-a", f"a{i}") for i in range(2)]
        await worker._remote_backend(state.catalog.models["up-a"])  # as an earlier batch left it
        claimed = [o for batch in await worker.claim() for o in batch]
        assert sorted(o.id for o in claimed) == sorted(ids)
        rows = await attempt_rows(state)
        started = {o.id: o.started_at for o in claimed}
        assert [(r.order_id, r.number, r.state, r.channel) for r in rows] == [
            (i, 1, "submitting", "openai") for i in sorted(ids)
        ]
        assert all(r.created_at == started[r.order_id] for r in rows)
        assert set(worker._planned) == set(ids)
    finally:
        await state.db.dispose()


async def test_the_first_try_is_left_to_the_batch_without_a_backend_or_a_free_slot(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, worker, a, _ = await remote_worker(settings, tmp_path, monkeypatch, 10, 2)
    try:
        for i in range(3):
            await submit_upstream(state, a, "up-a", f"a{i}")
        await worker.claim()  # no backend for up-a yet: nothing is built in the claim
        assert await attempt_rows(state) == [] and not worker._planned
        await submit_upstream(state, a, "up-a", "a3")
        backend = await worker._remote_backend(state.catalog.models["up-a"])
        backend.routes["openai"].in_flight = 1  # type: ignore[attr-defined]  # one slot busy
        worker._in_flight.clear()
        claimed = [o for batch in await worker.claim() for o in batch]
        # one free slot on the channel: one first try written, the other left to its batch
        assert len(claimed) == 2
        assert len(await attempt_rows(state)) == 1
    finally:
        await state.db.dispose()


async def test_a_first_try_written_by_the_claim_and_never_sent_leaves_no_row(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The channel cools down between the claim and the try: the order fails over (here to
    nothing: refunded) and the row of the try that was never sent is gone."""
    state, worker, a, _ = await remote_worker(settings, tmp_path, monkeypatch, 10, 10)
    try:
        order_id = await submit_upstream(state, a, "up-a", "a0")
        await worker._remote_backend(state.catalog.models["up-a"])
        [[order]] = await worker.claim()
        assert [r.state for r in await attempt_rows(state)] == ["submitting"]
        route = worker._remote["up-a"].routes["openai"]  # type: ignore[attr-defined]
        route.breaker.failures = route.breaker.failures_to_cool
        route.breaker.cooling_until = time.monotonic() + 60
        await worker.process([order])
        async with state.db.transaction(readonly=True) as s:
            ended = await s.get(Order, order_id)
        assert ended is not None and ended.status == "failed"
        assert ended.error_code == "upstream_unavailable"
        assert await attempt_rows(state) == []
        assert not worker._planned
    finally:
        await state.db.dispose()


async def test_an_order_ended_before_its_first_try_takes_the_planned_row_with_it(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Canceled (or failed) before the provider call: the row the claim wrote goes in the
    transaction that ends the order, and the batch can no longer take it."""
    state, worker, a, _ = await remote_worker(settings, tmp_path, monkeypatch, 10, 10)
    try:
        order_id = await submit_upstream(state, a, "up-a", "a0")
        await worker._remote_backend(state.catalog.models["up-a"])
        await worker.claim()
        assert [r.state for r in await attempt_rows(state)] == ["submitting"]
        await worker._end(order_id, "canceled", "canceled by the client", status="canceled")
        assert await attempt_rows(state) == []
        assert worker._remote["up-a"].attempts.take_planned(order_id) is None  # type: ignore[attr-defined]
        async with state.db.transaction(readonly=True) as s:
            ended = await s.get(Order, order_id)
        assert ended is not None and ended.status == "canceled"
    finally:
        await state.db.dispose()
