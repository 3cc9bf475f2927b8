"""A worker restricted to some models (`easel worker --models`), preloading them, and what
GET /api/v1/workers reports about it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from easel.config import Settings
from tests.support.app import app_client, auth, new_account
from tests.support.catalogs import tiny_catalog
from tests.support.generation import place, wait_orders
from tests.support.worker import running_worker

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def tiny(settings: Settings, tmp_path: Path, model: Path) -> Settings:
    catalog = tiny_catalog(tmp_path / "catalog.toml", model, side=256)
    return settings.model_copy(update={"catalog": catalog})


async def workers(client: httpx.AsyncClient, key: str) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/workers", headers=auth(key))
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["workers"]
    return found


async def test_worker_claims_only_its_models_and_reports_them(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    async with app_client(tiny(settings, tmp_path, tiny_sdxl)) as (client, state):
        account, key = await new_account(state, "pro")
        general = await place(state, account, 1, style="general")
        turbo = await place(state, account, 2, style="turbo")
        async with running_worker(state, models=["sdxl-turbo"]) as worker:
            done = await wait_orders(state, [turbo])
            assert done[0].status == "completed"
            await asyncio.sleep(10 * state.settings.poll_interval)  # several more claim rounds
            waiting = await wait_orders(state, [general], until=("pending",))
            assert waiting[0].worker_id is None
            [seen] = await workers(client, key)
            assert seen["id"] == worker.worker_id
            assert seen["online"] is True and seen["stopped_at"] is None
            assert seen["device"] == "cpu" and seen["host"]
            assert seen["served_models"] == ["sdxl-turbo"]
            assert seen["loaded_models"] == ["sdxl-turbo"]
            assert seen["loaded_bytes"] > 0
        [stopped] = await workers(client, key)
        assert stopped["online"] is False and stopped["stopped_at"] is not None
        assert list(worker.recent_batches) == [[turbo]]

        async with running_worker(state) as every_model:  # serves all models
            assert (await wait_orders(state, [general]))[0].status == "completed"
        # The same process, so the same default id (host-pid): the row is rewritten.
        assert every_model.worker_id == worker.worker_id
        [again] = await workers(client, key)
        assert again["served_models"] is None  # every model
        assert again["loaded_models"] == ["sdxl-general"]
        assert (await client.get("/api/v1/workers")).status_code == 401


async def test_preload_loads_the_models_before_any_order(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    async with app_client(tiny(settings, tmp_path, tiny_sdxl)) as (client, state):
        _, key = await new_account(state, "pro")
        models = ["sdxl-general", "sdxl-anime"]
        async with running_worker(state, models=models, preload=True) as worker:
            deadline = time.monotonic() + 60
            while True:
                listed = await workers(client, key)
                if listed and listed[0]["loaded_models"] == models:
                    break
                assert time.monotonic() < deadline, listed
                await asyncio.sleep(0.05)
            assert worker.processed == 0
            assert worker.models.loaded == models
