"""Server-sent order events through a real uvicorn server, with a worker on the tiny SDXL."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image

from easel.api.state import AppState
from easel.config import Settings
from tests.support.app import auth, free_port, new_account, running_server
from tests.support.catalogs import tiny_catalog
from tests.support.sse import Event, read_events
from tests.support.worker import running_worker

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

BODY = {"style": "general", "prompt": "a kite over the sea", "width": 256, "height": 256}
STEPS = 6


@asynccontextmanager
async def serving(
    settings: Settings, **update: object
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    """A real server for `settings` (plus `update`), a client for it and the test's own state."""
    settings = settings.model_copy(
        update={"port": free_port(), "events_poll_interval": 0.02} | update
    )
    state = AppState.build(settings)
    try:
        with running_server(settings) as base:
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                yield client, state
    finally:
        await state.db.dispose()


async def submit(client: httpx.AsyncClient, key: str) -> str:
    r = await client.post("/api/v1/generate", json=BODY, headers=auth(key))
    assert r.status_code == 200, r.text
    order_id: str = r.json()["order_id"]
    return order_id


async def test_events_follow_an_order_to_completion(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    catalog = tiny_catalog(tmp_path / "catalog.toml", tiny_sdxl, steps=STEPS)
    async with serving(settings, catalog=catalog) as (client, state):
        _, key = await new_account(state, "standard")
        order_id = await submit(client, key)
        path = f"/api/v1/orders/{order_id}/events"
        async with client.stream("GET", path, headers=auth(key)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = read_events(response)
            queued = await anext(events)
            assert queued == Event(
                "queued", {"order_id": order_id, "status": "pending", "queue_position": 1}
            )
            async with running_worker(state):
                rest = [event async for event in events]
        names = [e.name for e in rest]
        assert names[0] == "started" and names[-1] == "completed", names
        # The worker's first load of the model shows before the steps (from disk: no bytes).
        assert names[1] == "loading_model" and set(names[2:-1]) == {"progress"}, names
        assert rest[1].data["bytes_done"] is None and rest[1].data["model"]
        assert rest[0].data["attempt"] == 1
        progress = [e.data for e in rest[2:-1]]
        steps = [p["step"] for p in progress]
        assert steps == sorted(set(steps)), steps
        assert steps[-1] == STEPS
        assert {p["total_steps"] for p in progress} == {STEPS}
        percents = [p["percent"] for p in progress]
        assert percents == sorted(percents) and percents[-1] >= 99
        done = rest[-1].data
        assert done["order_id"] == order_id and done["status"] == "completed"
        assert len(done["output_urls"]) == 1
        image = (await client.get(done["output_urls"][0])).content
        assert Image.open(io.BytesIO(image)).size == (256, 256)


async def test_only_the_orders_account_may_read_it(settings: Settings) -> None:
    async with serving(settings) as (client, state):
        _, key = await new_account(state, "standard")
        _, other_key = await new_account(state, "standard")
        order_id = await submit(client, key)
        path = f"/api/v1/orders/{order_id}/events"
        r = await client.get(path, headers=auth(other_key))
        assert r.status_code == 404
        assert order_id in r.json()["error"]["message"]
        r = await client.get("/api/v1/orders/ORD-20990101-nothing/events", headers=auth(key))
        assert r.status_code == 404
        assert (await client.get(path)).status_code == 401


async def test_canceled_while_queued(settings: Settings) -> None:
    async with serving(settings) as (client, state):
        _, key = await new_account(state, "standard")
        order_id = await submit(client, key)
        path = f"/api/v1/orders/{order_id}/events"
        async with client.stream("GET", path, headers=auth(key)) as response:
            events = read_events(response)
            assert (await anext(events)).name == "queued"
            r = await client.post(f"/api/v1/orders/{order_id}/cancel", headers=auth(key))
            assert r.json()["status"] == "canceled"
            rest = [event async for event in events]
        assert [e.name for e in rest] == ["canceled"]
        assert rest[0].data["error"] == {"code": "canceled", "message": "canceled by the client"}


async def test_keep_alive_comments_then_the_time_limit_ends_it(settings: Settings) -> None:
    # The limit leaves room for the first snapshot on a loaded machine (it came after 0.6 s
    # once, with the 2 CPUs busy, and the stream ended before its `queued`).
    limits = {"events_keepalive_interval": 0.1, "events_max_duration": 1.5}
    async with serving(settings, **limits) as (client, state):
        _, key = await new_account(state, "standard")
        order_id = await submit(client, key)
        comments: list[str] = []
        started = time.monotonic()
        async with client.stream(
            "GET", f"/api/v1/orders/{order_id}/events", headers=auth(key)
        ) as response:
            got = [event async for event in read_events(response, comments)]
        assert time.monotonic() - started < 5
        assert [e.name for e in got] == ["queued", "timeout"]
        assert "open it again" in got[1].data["message"]
        assert comments.count("keep-alive") >= 2


async def test_stream_stops_when_the_client_goes(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="easel.api.routes.events")
    async with serving(settings) as (client, state):
        _, key = await new_account(state, "standard")
        order_id = await submit(client, key)
        async with client.stream(
            "GET", f"/api/v1/orders/{order_id}/events", headers=auth(key)
        ) as response:
            assert (await anext(read_events(response))).name == "queued"

        def ended() -> list[str]:
            return [
                getattr(r, "reason", "")
                for r in caplog.records
                if getattr(r, "order_id", None) == order_id
            ]

        for _ in range(200):
            if ended():
                break
            await asyncio.sleep(0.05)
        assert ended() == ["disconnected"]
