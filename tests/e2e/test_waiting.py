"""Waiting is free: every waiter (event streams, OpenAI synchronous waits, status long polls)
follows one change feed per API process. Real uvicorn servers on loopback, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from easel.api.app import create_app
from easel.api.state import AppState
from easel.config import Settings
from easel.db.tables import Order
from easel.orders.changes import ChangeFeed
from tests.support.app import auth, free_port, new_account, running_server
from tests.support.catalogs import tiny_catalog
from tests.support.processes import cluster
from tests.support.sse import read_events
from tests.support.worker import running_worker

pytestmark = pytest.mark.anyio

BODY = {"style": "general", "prompt": "a lighthouse", "width": 256, "height": 256}
OPENAI = {"model": "dall-e-3", "prompt": "a lighthouse", "size": "1024x1024"}


@asynccontextmanager
async def serving(
    settings: Settings, **update: object
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState, ChangeFeed]]:
    """A real server, a client, the test's own state and the server's change feed."""
    settings = settings.model_copy(
        update={"port": free_port(), "events_poll_interval": 0.05} | update
    )
    app: FastAPI = create_app(settings)
    state = AppState.build(settings)
    try:
        with running_server(settings, app) as base:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                yield client, state, app.state.easel.feed
    finally:
        await state.close()


async def submit(client: httpx.AsyncClient, key: str) -> str:
    r = await client.post("/api/v1/generate", json=BODY, headers=auth(key))
    assert r.status_code == 200, r.text
    order_id: str = r.json()["order_id"]
    return order_id


async def until(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_the_feeds_reads_do_not_grow_with_the_waiters(settings: Settings) -> None:
    async with serving(settings) as (client, state, feed):
        _, key = await new_account(state, "mega")
        orders = [await submit(client, key) for _ in range(40)]

        async def follow(order_id: str, opened: asyncio.Event) -> None:
            path = f"/api/v1/orders/{order_id}/events"
            async with client.stream("GET", path, headers=auth(key)) as response:
                events = read_events(response)
                assert (await anext(events)).name == "queued"
                opened.set()
                async for _ in events:
                    pass

        async def queries_per_second(streams: int) -> float:
            opened = [asyncio.Event() for _ in range(streams)]
            tasks = [
                asyncio.create_task(follow(o, e)) for o, e in zip(orders, opened, strict=False)
            ]
            await asyncio.gather(*(e.wait() for e in opened))
            before, started = feed.queries, time.monotonic()
            await asyncio.sleep(1.0)
            rate = (feed.queries - before) / (time.monotonic() - started)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await until(lambda: feed.waiters == 0)
            return rate

        one, forty = await queries_per_second(1), await queries_per_second(40)
        # SQLite: one look per interval (20/s) whatever the number; PostgreSQL: nothing changed
        assert forty <= one + 3, (one, forty)
        assert forty <= 25


async def test_waiters_whose_client_left_are_dropped_at_once(settings: Settings) -> None:
    async with serving(settings, rate_limits=True) as (client, state, feed):
        _, key = await new_account(state, "mega", topup=10)  # 32 open requests per key
        order_id = await submit(client, key)
        for _ in range(11):  # 33 waits: a slot that was not given back would refuse the last
            for call in (
                client.post("/v1/images/generations", json=OPENAI, headers=auth(key)),
                client.get(f"/api/v1/status/{order_id}?wait=30", headers=auth(key)),
                client.get(f"/api/v1/orders/{order_id}/events", headers=auth(key)),
            ):
                task = asyncio.ensure_future(call)
                await until(lambda task=task: feed.waiters == 1 or task.done())
                assert not task.done(), task.result().text
                task.cancel()  # the client closes its connection
                started = time.monotonic()
                await until(lambda: feed.waiters == 0)
                assert time.monotonic() - started < 1.0


async def test_the_process_bounds_its_waiters_with_503(settings: Settings) -> None:
    async with serving(settings, max_waiters=2) as (client, state, feed):
        _, key = await new_account(state, "mega", topup=10)
        order_id = await submit(client, key)
        path = f"/api/v1/orders/{order_id}/events"
        async with (
            client.stream("GET", path, headers=auth(key)) as first,
            client.stream("GET", path, headers=auth(key)) as second,
        ):
            assert first.status_code == second.status_code == 200
            await until(lambda: feed.waiters == 2)
            r = await client.get(path, headers=auth(key))
            assert r.status_code == 503 and r.headers["retry-after"]
            assert "EASEL_MAX_WAITERS" in r.json()["error"]["message"]
            r = await client.get(f"/api/v1/status/{order_id}?wait=5", headers=auth(key))
            assert r.status_code == 503
            async with state.db.transaction(readonly=True) as session:
                placed = await session.scalar(select(func.count()).select_from(Order))
            r = await client.post("/v1/images/generations", json=OPENAI, headers=auth(key))
            assert r.status_code == 503, r.text
            assert r.json()["error"]["type"] == "server_error" and r.headers["retry-after"]
            async with state.db.transaction(readonly=True) as session:  # nothing placed
                assert await session.scalar(select(func.count()).select_from(Order)) == placed


async def test_each_key_bounds_its_streams_and_waits_with_429(settings: Settings) -> None:
    async with serving(settings, rate_limits=True) as (client, state, feed):
        _, key = await new_account(state, "standard")  # key_max_open_requests = 8
        order_id = await submit(client, key)
        path = f"/api/v1/orders/{order_id}/events"
        streams = [client.stream("GET", path, headers=auth(key)) for _ in range(8)]
        opened = [await s.__aenter__() for s in streams]
        try:
            assert {r.status_code for r in opened} == {200}
            r = await client.get(path, headers=auth(key))
            assert r.status_code == 429 and "8 requests open" in r.json()["error"]["message"]
            r = await client.post("/v1/images/generations", json=OPENAI, headers=auth(key))
            assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
        finally:
            for s in streams:
                await s.__aexit__(None, None, None)
        await until(lambda: feed.waiters == 0)


async def test_long_poll_answers_when_the_order_changes(settings: Settings) -> None:
    async with serving(settings) as (client, state, _):
        _, key = await new_account(state, "mega")
        order_id = await submit(client, key)
        path = f"/api/v1/status/{order_id}"
        started = time.monotonic()
        r = await client.get(path, params={"wait": 0.3}, headers=auth(key))
        assert r.status_code == 200 and r.json()["status"] == "pending"
        assert 0.3 <= time.monotonic() - started < 2

        async def cancel_soon() -> None:
            await asyncio.sleep(0.3)
            await client.post(f"/api/v1/orders/{order_id}/cancel", headers=auth(key))

        canceling = asyncio.create_task(cancel_soon())
        started = time.monotonic()
        r = await client.get(path, params={"wait": 20}, headers=auth(key))
        await canceling
        assert r.json()["status"] == "canceled" and time.monotonic() - started < 3
        started = time.monotonic()  # a finished order answers at once
        r = await client.get(path, params={"wait": 20}, headers=auth(key))
        assert r.json()["status"] == "canceled" and time.monotonic() - started < 1
        r = await client.get(path, params={"wait": -1}, headers=auth(key))
        assert r.status_code == 422


@pytest.mark.slow
async def test_many_streams_and_waits_end_with_their_orders(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    catalog = tiny_catalog(tmp_path / "catalog.toml", tiny_sdxl, steps=2)
    async with serving(settings, catalog=catalog) as (client, state, feed):
        _, key = await new_account(state, "mega")
        orders = [await submit(client, key) for _ in range(12)]

        async def follow(order_id: str) -> list[str]:
            path = f"/api/v1/orders/{order_id}/events"
            async with client.stream("GET", path, headers=auth(key)) as response:
                events = [e async for e in read_events(response)]
            assert events[-1].data["output_urls"], events[-1]
            return [e.name for e in events]

        async def long_poll(order_id: str) -> str:
            status = "pending"
            while status not in ("completed", "failed", "canceled"):
                r = await client.get(f"/api/v1/status/{order_id}?wait=10", headers=auth(key))
                status = r.json()["status"]
            return status

        streams = [asyncio.create_task(follow(o)) for o in orders for _ in range(3)]
        polls = [asyncio.create_task(long_poll(o)) for o in orders]
        await until(lambda: feed.waiters == len(streams) + len(polls))
        async with running_worker(state):
            names = await asyncio.wait_for(asyncio.gather(*streams), 120)
            statuses = await asyncio.wait_for(asyncio.gather(*polls), 30)
        assert {n[-1] for n in names} == {"completed"} and set(statuses) == {"completed"}
        assert all(n[0] == "queued" and "started" in n for n in names)
        await until(lambda: feed.waiters == 0)


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_lost_listen_connection_loses_no_event(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    catalog = tiny_catalog(tmp_path / "catalog.toml", tiny_sdxl, steps=4)
    async with serving(settings, catalog=catalog) as (client, state, feed):
        _, key = await new_account(state, "mega")
        order_id = await submit(client, key)
        path = f"/api/v1/orders/{order_id}/events"
        async with client.stream("GET", path, headers=auth(key)) as response:
            events = read_events(response)
            assert (await anext(events)).name == "queued"
            assert feed.listens == 1
            dsn = state.db.url.set(drivername="postgresql").render_as_string(hide_password=False)
            conn = await asyncpg.connect(dsn)
            try:
                killed = await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            finally:
                await conn.close()
            assert killed == 1
            async with running_worker(state):  # the order runs while the feed listens again
                rest = [e async for e in events]
        assert rest[-1].name == "completed" and rest[-1].data["output_urls"]
        assert feed.listens == 2


@pytest.mark.slow
async def test_sigterm_ends_500_open_streams_and_stops_within_seconds(
    settings: Settings, tmp_path: Path
) -> None:
    with cluster(settings, tmp_path, EASEL_RATE_LIMITS="false") as c:
        base = c.api(services=False)
        state = AppState.build(settings)
        try:
            _, key = await new_account(state, "mega")
        finally:
            await state.close()
        limits = httpx.Limits(max_connections=600, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
            orders = [await submit(client, key) for _ in range(5)]
            opened = asyncio.Semaphore(0)

            async def follow(order_id: str) -> list[str]:
                path = f"/api/v1/orders/{order_id}/events"
                async with client.stream("GET", path, headers=auth(key)) as response:
                    assert response.status_code == 200
                    events = read_events(response)
                    names = [(await anext(events)).name]
                    opened.release()
                    async for event in events:
                        names.append(event.name)
                        if event.name == "timeout":
                            assert "restarting" in event.data["message"]
                return names

            streams = [asyncio.create_task(follow(orders[i % 5])) for i in range(500)]
            for _ in streams:
                await asyncio.wait_for(opened.acquire(), 60)
            proc = c.procs["api"]
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            names = await asyncio.wait_for(asyncio.gather(*streams), 30)
            while proc.poll() is None:
                assert time.monotonic() - started < 10, "easel serve did not stop"
                await asyncio.sleep(0.05)
            stopped = time.monotonic() - started
        assert proc.returncode == 0, c.log("api")
        assert all(n == ["queued", "timeout"] for n in names)
        assert stopped < 5, stopped
