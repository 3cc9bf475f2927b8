"""Seeds 001, 002 and 004 end to end: submit through the dialect, a worker runs the tiny pipeline,
the dialect's status and its callback (the same body) report the outcome; failures refund."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from easel.config import Settings
from tests.support.app import app_client, auth, new_account
from tests.support.catalogs import tiny_catalog
from tests.support.receiver import webhook_receiver
from tests.support.worker import poll_until, running_worker

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def tiny(settings: Settings, tmp_path: Path, model_dir: Path | str, extra: str = "") -> Settings:
    catalog = tiny_catalog(tmp_path / "catalog.toml", model_dir, side=384, extra=extra)
    return settings.model_copy(update={"catalog": catalog})


async def poll(
    client: httpx.AsyncClient, path: str, key: str, done: Any, timeout: float = 120
) -> dict[str, Any]:
    async def fetch() -> dict[str, Any]:
        body: dict[str, Any] = (await client.get(path, headers=auth(key))).json()
        return body

    return await poll_until(fetch, done, timeout)


def unsigned(body: Any) -> Any:
    """A task body with its signed URLs' query strings (expiry and signature) removed."""
    if isinstance(body, dict):
        return {k: unsigned(v) for k, v in body.items()}
    if isinstance(body, list):
        return [unsigned(v) for v in body]
    if isinstance(body, str) and "/files/" in body:
        return body.split("?")[0]
    return body


async def image_size(client: httpx.AsyncClient, url: str) -> tuple[int, int]:
    with Image.open(io.BytesIO((await client.get(url)).content)) as image:
        return image.size


async def test_task_api_image_completes_and_calls_back(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    settings = tiny(settings, tmp_path, tiny_sdxl)
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        with webhook_receiver() as hooks:
            body = {
                "model_id": "nano-banana-2",
                "prompt": "a serene zen garden at sunrise",
                "aspect_ratio": "16:9",
                "callback_url": hooks.url,
            }
            created = (
                await client.post("/api/v1/tasks/create", json=body, headers=auth(key))
            ).json()
            task_id = created["data"]["task_id"]
            async with running_worker(state):
                task = await poll(
                    client,
                    f"/api/v1/tasks/{task_id}",
                    key,
                    lambda b: b["data"]["task_status"] in (3, 4),
                )
                calls = await hooks.arrived(1)
        data = task["data"]
        assert (data["task_status"], data["task_type"], data["video_url"]) == (3, "image", None)
        assert await image_size(client, data["image_url"]) == (
            512,
            256,
        )  # 16:9 near 384x384, sides multiples of 64
        assert unsigned(calls[0].body) == unsigned(data)


async def test_kirin_calls_back_on_every_status_change(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    settings = tiny(settings, tmp_path, tiny_sdxl)
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "pro")
        with webhook_receiver() as hooks:
            body = {
                "model": "kirin_v2_image",
                "prompt": "a lighthouse on a cliff",
                "n": 2,
                "aspect_ratio": "1:1",
                "callback_url": hooks.url,
                "external_task_id": "lighthouse-1",
            }
            r = await client.post("/kirin/v1/images/generations", json=body, headers=auth(key))
            task_id = r.json()["task_id"]
            async with running_worker(state):
                calls = await hooks.arrived(2)
        path = "/kirin/v1/images/generations?external_task_id=lighthouse-1"
        task = (await client.get(path, headers=auth(key))).json()
        assert [c.body["status"] for c in calls] == ["processing", "completed"]
        assert unsigned(calls[1].body) == unsigned(task)
        assert task["task_id"] == task_id and "error" not in task
        content = task["output"]["content"]
        assert [c["type"] for c in content] == ["image", "image"]
        assert task["output"]["jobId"] == task_id
        assert task["usage"] == {"images": 2, "credits": 2}
        assert [await image_size(client, c["url"]) for c in content] == [(384, 384)] * 2


async def test_failed_orders_are_refunded_and_reported_in_each_dialect(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    missing = tmp_path / "no-such-model"
    extra = f'[models.sdxl-realistic]\nsource = "{missing}"\n'
    settings = tiny(settings, tmp_path, tiny_sdxl, extra="")
    catalog = tiny_catalog(tmp_path / "catalog.toml", tiny_sdxl, side=384)
    text = catalog.read_text().replace(f'[models.sdxl-realistic]\nsource = "{tiny_sdxl}"\n', extra)
    catalog.write_text(text)
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        with webhook_receiver() as hooks:
            body = {"model_id": "nano-banana-2", "prompt": "x", "callback_url": hooks.url}
            created = (
                await client.post("/api/v1/tasks/create", json=body, headers=auth(key))
            ).json()
            task_id = created["data"]["task_id"]
            before = (await client.get("/api/v1/account", headers=auth(key))).json()
            async with running_worker(state):
                task = await poll(
                    client, f"/api/v1/tasks/{task_id}", key, lambda b: b["data"]["task_status"] == 4
                )
                calls = await hooks.arrived(1)
            after = (await client.get("/api/v1/account", headers=auth(key))).json()
        data = task["data"]
        assert data["error"]["code"] == "model_unavailable"
        assert str(missing) in data["error"]["message"]
        assert (data["image_url"], calls[0].body) == (None, data)
        assert after["credits"]["total"] == before["credits"]["total"] + 1 == 300
