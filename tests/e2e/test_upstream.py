"""Upstream providers: an Easel whose model routes to another Easel over the OpenAI API, failover
across channels (refused, 429 then success, local), every provider's protocol against a loopback
server, cancel forwarded, and a remote worker killed mid-poll that never submits twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select, update

from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.tables import Account, LedgerEntry, Order, OrderAttempt
from easel.media.references import Reference
from easel.orders.inputs import load_inputs
from easel.orders.request import build_request
from easel.orders.submit import place_order, submit
from tests.support import databases, providers
from tests.support.app import free_port, new_account, serving
from tests.support.catalogs import tiny_catalog
from tests.support.generation import output_pixels, wait_orders
from tests.support.worker import poll_until, running_worker

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
KEY_ENV = "EASEL_TEST_PROVIDER_KEY"


def upstream_state(
    settings: Settings, tmp_path: Path, model_dir: Path | str, extra: str
) -> AppState:
    catalog = tiny_catalog(tmp_path / "catalog.toml", model_dir, steps=2, side=256, extra=extra)
    return AppState.build(settings.model_copy(update={"catalog": catalog, "lease_seconds": 3.0}))


@asynccontextmanager
async def hosted(
    settings: Settings, tmp_path: Path, extra: str
) -> AsyncIterator[tuple[AppState, Account]]:
    """An Easel whose catalog adds the upstream models of `extra` (no local weights used), and a
    mega account; its database closed after."""
    state = upstream_state(settings, tmp_path, "unused", extra)
    try:
        account, _ = await new_account(state, "mega")
        yield state, account
    finally:
        await state.db.dispose()


async def place_model(
    state: AppState,
    account: Account,
    name: str,
    n: int = 1,
    reference: Reference | None = None,
    mask: Reference | None = None,
) -> str:
    model = state.catalog.resolve(name)
    assert model is not None, name
    req = build_request(
        state.settings,
        dialect="native",
        model=model,
        model_alias=name,
        product=state.catalog.products["static_image"],
        prompt="a lighthouse at dusk",
        width=256,
        height=256,
        n=n,
        seed=7,
    )
    if reference is not None:  # stored with the order, as a dialect places it
        order, _ = await place_order(state, account, replace(req, reference=reference, mask=mask))
        return order.id
    async with state.db.transaction() as session:
        order, _ = await submit(session, state.catalog, account, req, utcnow())
    return order.id


async def attempts_of(state: AppState, order_id: str) -> list[OrderAttempt]:
    async with state.db.transaction(readonly=True) as session:
        rows = await session.scalars(
            select(OrderAttempt)
            .where(OrderAttempt.order_id == order_id)
            .order_by(OrderAttempt.number)
        )
        return list(rows)


async def refunds(state: AppState, order_id: str) -> int:
    async with state.db.transaction(readonly=True) as session:
        found = await session.scalar(
            select(func.count()).where(
                LedgerEntry.order_id == order_id, LedgerEntry.kind == "refund"
            )
        )
        return int(found or 0)


async def test_easel_to_easel_over_the_openai_api(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second Easel: its own SQLite database, the tiny SDXL behind its OpenAI dialect.
    (tmp_path / "second").mkdir()
    second_catalog = tiny_catalog(
        tmp_path / "second" / "catalog.toml", tiny_sdxl, steps=2, side=256
    )
    second = Settings(
        data_dir=tmp_path / "second" / "data",
        database_url=await asyncio.to_thread(databases.sqlite_url, tmp_path / "second"),
        secret_key="second-secret-key",
        catalog=second_catalog,
        poll_interval=0.05,
        progress_interval=0.0,
        rate_limits=False,
    )
    async with serving(second) as (second_state, second_base):
        _, second_key = await new_account(second_state, "mega")
        monkeypatch.setenv(KEY_ENV, second_key)
        extra = providers.upstream_model(
            "gpt-image-2",
            providers.channel_table("gpt-image-2", "openai", f"{second_base}/v1", "dall-e-3"),
            providers.local_channel("gpt-image-2"),
        )
        state = upstream_state(settings, tmp_path, tiny_sdxl, extra)
        try:
            account, _ = await new_account(state, "mega")
            order_id = await place_model(state, account, "gpt-image-2")
            async with (
                running_worker(second_state),
                running_worker(state, models=["gpt-image-2"]),
            ):
                [order] = await wait_orders(state, [order_id], timeout=120)
            assert order.status == "completed", order.error_message
            assert order.model == "gpt-image-2"
            [(_seed, pixels)] = await output_pixels(state, order_id)  # in the first's storage
            assert pixels.shape == (256, 256, 3)
            [attempt] = await attempts_of(state, order_id)
            assert (attempt.channel, attempt.provider, attempt.state) == (
                "openai",
                "openai",
                "succeeded",
            )
            assert attempt.cost == pytest.approx(0.04)
            assert attempt.latency_ms is not None
        finally:
            await state.db.dispose()


async def test_failover_refused_then_429_then_success(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, providers.KEY)
    closed = f"http://127.0.0.1:{free_port()}/v1"
    with providers.provider("openai", job_seconds=0.05, script=[429]) as busy:
        extra = providers.upstream_model(
            "up-x",
            providers.channel_table("up-x", "openai", closed, "m1", priority=1),
            providers.channel_table(
                "up-x", "openai", f"{busy.url}/v1", "m2", priority=2, name="busy"
            ),
            providers.local_channel("up-x", priority=3),
        )
        state = upstream_state(settings, tmp_path, tiny_sdxl, extra)
        try:
            account, _ = await new_account(state, "mega")
            order_id = await place_model(state, account, "up-x")
            async with running_worker(state, models=["up-x"]):
                [order] = await wait_orders(state, [order_id], timeout=60)
            assert order.status == "completed", order.error_message
            tries = [(a.channel, a.state) for a in await attempts_of(state, order_id)]
            assert tries == [("openai", "refused"), ("busy", "refused"), ("busy", "succeeded")]
            assert busy.submits == 1 and busy.refused == 1
        finally:
            await state.db.dispose()


async def test_failover_to_local_and_everything_down(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, providers.KEY)
    closed = f"http://127.0.0.1:{free_port()}/v1"
    with providers.provider("openai", script=[503] * 10) as down:
        extra = providers.upstream_model(
            "up-local",
            providers.channel_table("up-local", "openai", closed, "m1"),
            providers.channel_table("up-local", "openai", f"{down.url}/v1", "m2", name="down"),
            providers.local_channel("up-local"),
        ) + providers.upstream_model(
            "up-none",
            providers.channel_table("up-none", "openai", closed, "m1"),
            providers.channel_table("up-none", "openai", f"{down.url}/v1", "m2", name="down"),
        )
        state = upstream_state(settings, tmp_path, tiny_sdxl, extra)
        try:
            account, _ = await new_account(state, "mega")
            to_local = await place_model(state, account, "up-local")
            nowhere = await place_model(state, account, "up-none")
            async with running_worker(state):
                local, failed = await wait_orders(state, [to_local, nowhere], timeout=120)
            assert local.status == "completed", local.error_message
            assert local.model == "sdxl-general"  # handed to the local model's queue
            assert [a.state for a in await attempts_of(state, to_local)][-1] == "handed_off"
            assert failed.status == "failed"
            assert failed.error_code == "upstream_unavailable"
            # The client's message names no provider (EASEL_EXPOSE_ROUTE is off); each try's
            # error is the operator's, in the attempt rows.
            assert failed.error_message == (
                "the hosted model could not take the order (3 tries); the order was refunded"
            )
            nowhere_tries = await attempts_of(state, nowhere)
            assert sorted((a.channel, a.state) for a in nowhere_tries) == [
                ("down", "refused"),
                ("down", "refused"),
                ("openai", "refused"),
            ]  # one priority: in a weighted random order
            assert all(a.error for a in nowhere_tries)
            assert await refunds(state, nowhere) == 1
        finally:
            await state.db.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # no SQL of its own
async def test_a_failed_provider_hands_an_edit_to_the_edit_model(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, providers.KEY)
    closed = f"http://127.0.0.1:{free_port()}/v1"
    extra = providers.upstream_model(
        "up-e",
        providers.channel_table("up-e", "openai", closed, "m1"),
        providers.local_channel("up-e", priority=2),
        providers.local_channel("up-e", "qwen-image-edit", priority=3),
    )
    extra += '[models.qwen-image-edit]\nsource = "unused"\n'
    state = upstream_state(settings, tmp_path, "unused", extra)
    image = Reference(data=providers.png(64, 64), content_type="image/png", width=64, height=64)
    try:
        account, _ = await new_account(state, "mega")
        edit = await place_model(state, account, "up-e", reference=image)
        text = await place_model(state, account, "up-e")

        async def handed() -> list[Order]:
            async with state.db.transaction(readonly=True) as session:
                found = [await session.get(Order, i, populate_existing=True) for i in (edit, text)]
            return [o for o in found if o is not None]

        async with running_worker(state, models=["up-e"]):  # runs neither local model
            orders = await poll_until(handed, lambda os: all(o.model != "up-e" for o in os), 60)
        # Redrawn by the first local channel (SDXL at strength 0.8) it would not be edited.
        assert [o.model for o in orders] == ["qwen-image-edit", "sdxl-general"]
        assert [a.state for a in await attempts_of(state, edit)] == ["refused", "handed_off"]
    finally:
        await state.db.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # no SQL of its own
async def test_an_unreadable_mask_fails_its_order_cleanly(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any storage error on a further input (not only a missing file) fails that order, refunded,
    as one on the reference does."""
    monkeypatch.setenv(KEY_ENV, providers.KEY)
    closed = f"http://127.0.0.1:{free_port()}/v1"
    extra = providers.upstream_model("up-m", providers.channel_table("up-m", "openai", closed, "m"))
    state = upstream_state(settings, tmp_path, "unused", extra)
    image = Reference(data=providers.png(64, 64), content_type="image/png", width=64, height=64)
    try:
        account, _ = await new_account(state, "mega")
        order_id = await place_model(state, account, "up-m", reference=image, mask=image)
        async with state.db.transaction(readonly=True) as session:
            order = await session.get(Order, order_id)
        assert order is not None
        mask_key = load_inputs(order.inputs).mask
        assert mask_key is not None
        stored = state.storage.path(mask_key)
        stored.unlink()
        stored.mkdir()  # reading it raises IsADirectoryError, not MissingObject
        async with running_worker(state, models=["up-m"]):
            [failed] = await wait_orders(state, [order_id], timeout=60)
        assert (failed.status, failed.error_code) == ("failed", "reference_unavailable")
        assert "could not be read (IsADirectoryError)" in (failed.error_message or "")
        assert await refunds(state, order_id) == 1
        assert await attempts_of(state, order_id) == []  # no provider was called
    finally:
        await state.db.dispose()


@pytest.mark.parametrize("protocol", ["fal", "kie", "replicate", "easel-tasks"])
async def test_each_async_provider_protocol(
    protocol: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if settings.db_url.startswith("postgresql") and protocol != "fal":
        pytest.skip("the protocol is the same on PostgreSQL; fal covers it there")
    monkeypatch.setenv(KEY_ENV, providers.KEY)
    fake_protocol = "tasks" if protocol == "easel-tasks" else protocol
    with providers.provider(fake_protocol, job_seconds=0.3, script=[429]) as fake:
        base = f"{fake.url}/v1" if protocol == "replicate" else fake.url
        extra = providers.upstream_model(
            "up-p", providers.channel_table("up-p", protocol, base, "owner/model")
        )
        async with hosted(settings, tmp_path, extra) as (state, account):
            order_id = await place_model(state, account, "up-p", n=2)
            async with running_worker(state, models=["up-p"]):
                [order] = await wait_orders(state, [order_id], timeout=60)
            assert order.status == "completed", order.error_message
            assert len(await output_pixels(state, order_id)) == 2
            assert [a.state for a in await attempts_of(state, order_id)] == ["refused", "succeeded"]
            assert fake.polls > 0


@pytest.mark.parametrize("protocol", ["kie", "easel-tasks"])
async def test_a_task_refused_after_the_first_was_accepted_fails_the_order(
    protocol: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An order of two images is two tasks: once the first is accepted, a refusal of the second
    is final (the provider may bill the first): no other channel, refunded once."""
    monkeypatch.setenv(KEY_ENV, providers.KEY)
    fake_protocol = "tasks" if protocol == "easel-tasks" else protocol
    with (
        providers.provider(fake_protocol, job_seconds=0.3, script=[200, 503]) as fake,
        providers.provider("openai", job_seconds=0.1) as spare,
    ):
        extra = providers.upstream_model(
            "up-t",
            providers.channel_table("up-t", protocol, fake.url, "owner/model"),
            providers.channel_table("up-t", "openai", f"{spare.url}/v1", "m", priority=2),
        )
        async with hosted(settings, tmp_path, extra) as (state, account):
            order_id = await place_model(state, account, "up-t", n=2)
            async with running_worker(state, models=["up-t"]):
                [order] = await wait_orders(state, [order_id], timeout=60)
            assert order.status == "failed"
            assert order.error_code == "upstream_failed"
            [attempt] = await attempts_of(state, order_id)
            assert attempt.state == "failed"
            assert "task 2 of 2 was refused after the first were accepted" in (attempt.error or "")
            assert (fake.submits, fake.refused, spare.submits) == (1, 1, 0)
            assert await refunds(state, order_id) == 1


@pytest.mark.parametrize("protocol", ["fal", "kie", "replicate", "easel-tasks"])
async def test_unreadable_status_answers_are_polled_again(
    protocol: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status read that answers a proxy's error page is read again: the accepted job is
    followed to its end, never sent elsewhere (one submit, no other channel)."""
    if settings.db_url.startswith("postgresql") and protocol != "fal":
        pytest.skip("the protocol is the same on PostgreSQL; fal covers it there")
    monkeypatch.setenv(KEY_ENV, providers.KEY)
    fake_protocol = "tasks" if protocol == "easel-tasks" else protocol
    with (
        providers.provider(fake_protocol, job_seconds=0.5, garbled_polls=3) as fake,
        providers.provider("openai", job_seconds=0.1) as spare,
    ):
        base = f"{fake.url}/v1" if protocol == "replicate" else fake.url
        extra = providers.upstream_model(
            "up-g",
            providers.channel_table("up-g", protocol, base, "owner/model"),
            providers.channel_table("up-g", "openai", f"{spare.url}/v1", "m", priority=2),
        )
        async with hosted(settings, tmp_path, extra) as (state, account):
            order_id = await place_model(state, account, "up-g")
            async with running_worker(state, models=["up-g"]):
                [order] = await wait_orders(state, [order_id], timeout=60)
            assert order.status == "completed", order.error_message
            assert [a.state for a in await attempts_of(state, order_id)] == ["succeeded"]
            assert (fake.submits, fake.garbled_polls, spare.submits) == (1, 0, 0)


@pytest.mark.parametrize("job_fails_unbilled", [False, True])
async def test_a_lost_lease_leaves_the_job_to_the_orders_next_run(
    job_fails_unbilled: bool, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker takes the order while this one polls its job: this one leaves the job
    running and its attempt `accepted` (no cancel at the provider). The order's next run polls
    that job by its id (one submit in all); a job that then fails unbilled goes on to the next
    channel."""
    monkeypatch.setenv(KEY_ENV, providers.KEY)
    with (
        providers.provider("tasks", job_seconds=4.0, fail_jobs=job_fails_unbilled) as fake,
        providers.provider("openai", job_seconds=0.1) as spare,
    ):
        extra = providers.upstream_model(
            "up-l",
            providers.channel_table("up-l", "easel-tasks", fake.url, "m"),
            providers.channel_table("up-l", "openai", f"{spare.url}/v1", "m", priority=2),
        )
        async with hosted(settings, tmp_path, extra) as (state, account):
            order_id = await place_model(state, account, "up-l")
            async with running_worker(state, models=["up-l"]) as worker:
                await poll_until(lambda: _value(fake.polls), lambda polls: polls > 0)
                await _take_over(state, order_id, 1.5)
                await poll_until(lambda: _value(worker.processed), lambda n: n == 1)
                [left] = await attempts_of(state, order_id)
                assert (left.state, fake.cancels) == ("accepted", 0)
                [order] = await wait_orders(state, [order_id], timeout=60)  # reaped, run again
            assert order.status == "completed", order.error_message
            tries = [(a.provider, a.state) for a in await attempts_of(state, order_id)]
            if job_fails_unbilled:
                assert tries == [("easel-tasks", "unbilled"), ("openai", "succeeded")]
            else:
                assert tries == [("easel-tasks", "succeeded")]
            assert (fake.submits, fake.cancels, spare.submits) == (1, 0, int(job_fails_unbilled))


@pytest.mark.parametrize("ending", ["canceled", "failed", "completed"])
async def test_a_job_whose_order_ended_unfollowed_is_canceled_at_the_provider(
    ending: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker following a job loses the order's lease; the reaper then cancels the order
    (the client asked meanwhile) or fails it (its last attempt), or the order's next holder
    completes it another way. The job still runs at the provider, billed, with nobody to
    follow it: the worker's orphan sweep cancels it there and marks its attempt `canceled`,
    once."""
    monkeypatch.setenv(KEY_ENV, providers.KEY)
    with providers.provider("fal", job_seconds=60) as fake:
        extra = providers.upstream_model(
            "up-x", providers.channel_table("up-x", "fal", fake.url, "fal-ai/x")
        )
        async with hosted(settings, tmp_path, extra) as (state, account):
            order_id = await place_model(state, account, "up-x")
            async with running_worker(state, models=["up-x"]) as worker:
                await poll_until(lambda: _value(fake.polls), lambda polls: polls > 0)
                if ending == "completed":  # as another run would, on another channel
                    await _take_over(state, order_id, 60, status="completed", completed_at=utcnow())
                else:  # expired: the reaper ends it
                    await _take_over(
                        state,
                        order_id,
                        -1,
                        cancel_requested=ending == "canceled",
                        attempts=state.settings.max_attempts,
                    )
                [order] = await wait_orders(state, [order_id], timeout=30)
                await poll_until(lambda: _value(fake.cancels), lambda n: n > 0, timeout=30)
                assert await worker.cancel_orphans() == 0  # swept once
            assert order.status == ending
            [attempt] = await attempts_of(state, order_id)
            assert attempt.state == "canceled"
            assert "no worker followed this job" in (attempt.error or "")
            assert (fake.submits, fake.cancels) == (1, 1)
            assert await refunds(state, order_id) == int(ending != "completed")


async def test_a_job_accepted_after_its_order_was_taken_back_is_canceled(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order is taken back while its submit is on the way, and its next holder leaves the
    try's channel (the row no longer says `submitting`). When the provider's acceptance comes,
    nobody would follow that job: the worker cancels it at once and touches nothing else."""
    monkeypatch.setenv(KEY_ENV, providers.KEY)
    with providers.provider("fal", job_seconds=30, submit_seconds=1.5) as fake:
        extra = providers.upstream_model(
            "up-a", providers.channel_table("up-a", "fal", fake.url, "fal-ai/x")
        )
        async with hosted(settings, tmp_path, extra) as (state, account):
            order_id = await place_model(state, account, "up-a")
            async with running_worker(state, models=["up-a"]) as worker:
                await poll_until(lambda: _value(fake.submits), lambda n: n == 1)
                await _take_over(state, order_id, 60)
                async with state.db.transaction() as session:  # as the next holder does
                    await session.execute(
                        update(OrderAttempt)
                        .where(OrderAttempt.order_id == order_id)
                        .values(state="lost")
                    )
                await poll_until(lambda: _value(worker.processed), lambda n: n == 1)
                await poll_until(lambda: _value(fake.cancels), lambda n: n == 1, timeout=10)
            [attempt] = await attempts_of(state, order_id)
            assert (attempt.state, attempt.remote_id) == ("lost", None)
            [order] = await wait_orders(state, [order_id], until=("running",), timeout=5)
            assert order.worker_id == "another-worker"  # nothing ended by the first worker
            assert (fake.submits, fake.polls) == (1, 0)


async def test_a_resume_past_the_channels_timeout_polls_the_job_once(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order's next run resumes its job after the channel's timeout has passed (counted
    from the try's start): it polls once before giving up, and the job, done meanwhile, is
    delivered."""
    monkeypatch.setenv(KEY_ENV, providers.KEY)
    with providers.provider("tasks", job_seconds=1.0) as fake:
        extra = providers.upstream_model(
            "up-r",
            providers.channel_table("up-r", "easel-tasks", fake.url, "m", timeout_seconds=1.5),
        )
        async with hosted(settings, tmp_path, extra) as (state, account):
            order_id = await place_model(state, account, "up-r")
            async with running_worker(state, models=["up-r"]):
                await poll_until(lambda: _value(fake.polls), lambda polls: polls > 0)
                await _take_over(state, order_id, 2.0)  # reaped and resumed after 1.5 s
                [order] = await wait_orders(state, [order_id], timeout=30)
            assert order.status == "completed", order.error_message
            [attempt] = await attempts_of(state, order_id)
            assert attempt.state == "succeeded"
            assert order.attempts == 2  # claimed again, 2 s on: the try's 1.5 s had passed
            assert (fake.submits, fake.cancels) == (1, 0)


async def _value(value: T) -> T:
    return value


async def _take_over(state: AppState, order_id: str, seconds: float, **values: Any) -> None:
    """Another worker holds the order now, for `seconds` (negative: its lease has expired)."""
    async with state.db.transaction() as session:
        await session.execute(
            update(Order)
            .where(Order.id == order_id)
            .values(
                worker_id="another-worker",
                lease_until=utcnow() + timedelta(seconds=seconds),
                **values,
            )
        )


@pytest.mark.parametrize("where", ["own origin", "another name", "redirected"])
async def test_outputs_on_the_channels_own_private_origin_are_downloaded(
    where: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider on the LAN (here loopback, with no private network allowed for other URLs)
    hands back output URLs on its own origin: trusted as its API is (the operator's base_url).
    The same server by another name is another origin, and so is where the trusted origin
    redirects to: the outbound URL policy refuses both."""
    monkeypatch.setenv(KEY_ENV, providers.KEY)
    with providers.provider("tasks", job_seconds=0.2) as fake:
        other = fake.url.replace("127.0.0.1", "localhost")
        if where == "another name":
            fake.files_url = other
        if where == "redirected":
            fake.files_redirect = other
        extra = providers.upstream_model(
            "up-o", providers.channel_table("up-o", "easel-tasks", fake.url, "m")
        )
        no_private = settings.model_copy(update={"allowed_networks": []})
        async with hosted(no_private, tmp_path, extra) as (state, account):
            order_id = await place_model(state, account, "up-o")
            async with running_worker(state, models=["up-o"]):
                [order] = await wait_orders(state, [order_id], timeout=60)
            if where != "own origin":
                assert (order.status, order.error_code) == ("failed", "upstream_failed")
                [attempt] = await attempts_of(state, order_id)
                assert "could not be downloaded (UnsafeURL" in (attempt.error or "")
                return
            assert order.status == "completed", order.error_message
            assert len(await output_pixels(state, order_id)) == 1


async def test_an_order_canceled_while_it_waits_for_a_slot_is_not_sent(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first channel has one slot: the second order waits for it (before the channel of
    priority 2). Canceled meanwhile, it is never sent once the slot frees."""
    from easel.orders import lifecycle

    monkeypatch.setenv(KEY_ENV, providers.KEY)
    with (
        providers.provider("openai", job_seconds=3.0) as fake,
        providers.provider("openai", job_seconds=0.1) as spare,
    ):
        extra = providers.upstream_model(
            "up-w",
            providers.channel_table("up-w", "openai", f"{fake.url}/v1", "m", max_in_flight=1),
            providers.channel_table("up-w", "openai", f"{spare.url}/v1", "m", priority=2),
        )
        async with hosted(settings, tmp_path, extra) as (state, account):
            first = await place_model(state, account, "up-w")
            async with running_worker(state, models=["up-w"]):
                await poll_until(lambda: _value(fake.submits), lambda n: n == 1)
                waiting = await place_model(state, account, "up-w")  # behind the held slot
                await wait_orders(state, [waiting], until=("running",), timeout=30)
                async with state.db.transaction() as session:
                    await lifecycle.cancel(session, account.id, waiting, utcnow())
                done = await wait_orders(state, [first, waiting], timeout=60)
            assert [o.status for o in done] == ["completed", "canceled"]
            assert (fake.submits, spare.submits) == (1, 0)
            assert await attempts_of(state, waiting) == []
            assert await refunds(state, waiting) == 1


async def test_cancel_reaches_the_provider(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from easel.orders import lifecycle

    monkeypatch.setenv(KEY_ENV, providers.KEY)
    with providers.provider("fal", job_seconds=30) as fake:
        extra = providers.upstream_model(
            "up-c", providers.channel_table("up-c", "fal", fake.url, "fal-ai/x")
        )
        async with hosted(settings, tmp_path, extra) as (state, account):
            order_id = await place_model(state, account, "up-c")
            async with running_worker(state, models=["up-c"]):
                await wait_orders(state, [order_id], until=("running",), timeout=30)
                for _ in range(200):
                    if fake.submits:
                        break
                    await asyncio.sleep(0.05)
                async with state.db.transaction() as session:
                    await lifecycle.cancel(session, account.id, order_id, utcnow())
                [order] = await wait_orders(state, [order_id], timeout=30)
                for _ in range(100):
                    if fake.cancels:
                        break
                    await asyncio.sleep(0.05)
            assert order.status == "canceled"
            assert fake.cancels == 1


async def test_a_killed_remote_worker_is_resumed_without_a_second_submit(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, providers.KEY)
    with providers.provider("fal", job_seconds=4) as fake:
        extra = providers.upstream_model(
            "up-k", providers.channel_table("up-k", "fal", fake.url, "fal-ai/x")
        )
        state = upstream_state(settings, tmp_path, "unused", extra)
        env = os.environ | {
            "PYTHONPATH": str(ROOT),
            "EASEL_DATA_DIR": str(settings.data_dir),
            "EASEL_DATABASE_URL": state.settings.db_url,
            "EASEL_CATALOG": str(state.settings.catalog),
            "EASEL_SECRET_KEY": settings.secret_key,
            "EASEL_POLL_INTERVAL": "0.05",
            "EASEL_LEASE_SECONDS": "3",
            "EASEL_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
            "EASEL_WORKER_ID": "doomed",
        }
        log = tmp_path / "worker.log"
        try:
            account, _ = await new_account(state, "mega")
            order_id = await place_model(state, account, "up-k")
            with log.open("wb") as out:
                proc = subprocess.Popen(  # noqa: ASYNC220 - killed below
                    [sys.executable, "-m", "easel", "worker", "--remote"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
                try:
                    for _ in range(400):
                        found = await attempts_of(state, order_id)
                        if found and found[0].state == "accepted" and fake.polls > 0:
                            break
                        await asyncio.sleep(0.05)
                    else:
                        raise AssertionError(log.read_text())
                finally:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=30)
            async with running_worker(state, models=["up-k"]):  # its reaper takes the order back
                [order] = await wait_orders(state, [order_id], timeout=60)
            assert order.status == "completed", order.error_message
            assert fake.submits == 1
            [attempt] = await attempts_of(state, order_id)
            assert attempt.state == "succeeded"
        finally:
            await state.db.dispose()
