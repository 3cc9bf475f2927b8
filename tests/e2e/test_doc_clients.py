"""Clients written from each seed document's text alone (only what the document says: its paths,
fields and status values), run against a real server on loopback with a worker on tiny pipelines.

Each client takes a base URL and a key and nothing else, as a client of the real service would.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Self

import httpx
import imageio_ffmpeg
import pytest
from PIL import Image
from sqlalchemy import select

from easel.config import Settings
from easel.db.tables import Output
from tests.support.app import new_account, serving
from tests.support.catalogs import animatediff_table, tiny_catalog, wan_table
from tests.support.receiver import webhook_receiver
from tests.support.seeds import SEED_001_BODY, SEED_002_BODY
from tests.support.worker import poll_until, running_worker

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TIMEOUT = 120.0


class DocClient:
    """Bearer auth on a base URL: all any of the three documents asks of a client."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()


class KieQwenClient(DocClient):
    """Seed 001: POST /api/v1/qwen/generate, then GET record-info until successFlag leaves 0."""

    async def generate(self, **params: Any) -> str:
        body = (await self.http.post("/api/v1/qwen/generate", json=params)).json()
        assert body["code"] == 200, body
        task_id: str = body["data"]["taskId"]
        return task_id

    async def wait(self, task_id: str) -> dict[str, Any]:
        async def record() -> dict[str, Any]:
            r = await self.http.get("/api/v1/qwen/record-info", params={"taskId": task_id})
            body: dict[str, Any] = r.json()
            return body

        return await poll_until(record, lambda r: r["successFlag"] != 0, TIMEOUT, 0.1)


class TaskApiClient(DocClient):
    """Seed 002: POST /api/v1/tasks/create, poll GET /api/v1/tasks/{task_id} until 3 or 4."""

    async def create(self, **params: Any) -> dict[str, Any]:
        r = await self.http.post("/api/v1/tasks/create", json=params)
        r.raise_for_status()  # as seed 002's clients do: business failures are HTTP 200, code 0
        body = r.json()
        if body["code"] != 200:
            raise RuntimeError(body["msg"])
        data: dict[str, Any] = body["data"]
        return data

    async def wait(self, task_id: str) -> dict[str, Any]:
        async def task() -> dict[str, Any]:
            data: dict[str, Any] = (await self.http.get(f"/api/v1/tasks/{task_id}")).json()["data"]
            return data

        return await poll_until(task, lambda t: t["task_status"] in (3, 4), TIMEOUT, 0.1)


class KirinClient(DocClient):
    """Seed 004: create, then poll the task until completed or failed; output.content urls."""

    async def create(self, **params: Any) -> str:
        r = await self.http.post("/kirin/v1/images/generations", json=params)
        assert r.status_code == 200, r.text
        task_id: str = r.json()["task_id"]
        return task_id

    async def wait(self, task_id: str) -> dict[str, Any]:
        async def task() -> dict[str, Any]:
            body: dict[str, Any] = (
                await self.http.get(f"/kirin/v1/images/generations/{task_id}")
            ).json()
            return body

        return await poll_until(
            task, lambda t: t["status"] in ("completed", "failed"), TIMEOUT, 0.1
        )


async def download(url: str) -> bytes:
    async with httpx.AsyncClient() as http:
        r = await http.get(url)
        assert r.status_code == 200, r.text
        return r.content


def catalog_for(
    tmp_path: Path, sdxl: Path, qwen: Path, animatediff: tuple[Path, Path], wan: Path
) -> Path:
    extra = (
        f'[models.qwen-image]\nsource = "{qwen}"\nsteps = 2\n'
        + animatediff_table(*animatediff)
        + "width = 256\nheight = 256\n"
        + wan_table(wan)
    )
    return tiny_catalog(tmp_path / "catalog.toml", sdxl, side=384, extra=extra)


@pytest.fixture
def doc_settings(
    settings: Settings,
    tmp_path: Path,
    tiny_sdxl: Path,
    tiny_qwen_image: Path,
    tiny_animatediff: tuple[Path, Path],
    tiny_wan: Path,
) -> Settings:
    catalog = catalog_for(tmp_path, tiny_sdxl, tiny_qwen_image, tiny_animatediff, tiny_wan)
    return settings.model_copy(update={"catalog": catalog})


async def test_seed_001_client(doc_settings: Settings) -> None:
    async with serving(doc_settings) as (state, base):
        _, key = await new_account(state, "pro")
        async with KieQwenClient(base, key) as client:
            with webhook_receiver() as hooks:
                english = await client.generate(**SEED_001_BODY, seed=42, callBackUrl=hooks.url)
                chinese = await client.generate(
                    prompt="山间飞龙, 数字艺术", image_size="square", output_format="jpg", seed=42
                )
                async with running_worker(state):
                    record = await client.wait(english)
                    zh = await client.wait(chinese)
                    calls = await hooks.arrived(1)
            english_png = await download(record["imageUrl"])
            chinese_jpg = await download(zh["imageUrl"])
            async with state.db.transaction() as session:
                scores = list(
                    await session.scalars(
                        select(Output.nsfw_score).where(Output.order_id.in_((english, chinese)))
                    )
                )
    # safety_check defaults to true (seed 001): both outputs were scored, and passed.
    assert len(scores) == 2 and all(score is not None and score < 0.8 for score in scores)
    assert record["nsfwDetected"] == zh["nsfwDetected"] == [False]
    assert record["successFlag"] == 1 and record["completeTime"] >= record["createTime"]
    with Image.open(io.BytesIO(english_png)) as image:
        assert (image.format, image.size) == ("PNG", (1024, 576))  # landscape_16_9
    with Image.open(io.BytesIO(chinese_jpg)) as image:
        assert (image.format, image.size) == ("JPEG", (1024, 1024))  # square, jpg
    sent = calls[0].body
    assert (sent["successFlag"], sent["taskId"]) == (1, english)
    assert sent["imageUrl"].split("?")[0] == record["imageUrl"].split("?")[0]


async def test_seed_002_client_image_and_video(doc_settings: Settings, tmp_path: Path) -> None:
    async with serving(doc_settings) as (state, base):
        _, key = await new_account(state, "pro")
        async with TaskApiClient(base, key) as client:
            image_task = await client.create(**SEED_002_BODY)
            video_task = await client.create(model_id="seedance-2", prompt="waves on a beach")
            with pytest.raises(RuntimeError, match="gpt-image-2"):
                await client.create(model_id="midjourney", prompt="x")
            async with running_worker(state):
                image = await client.wait(image_task["task_id"])
                video = await client.wait(video_task["task_id"])
            png_bytes = await download(image["image_url"])
            mp4_bytes = await download(video["video_url"])
    assert (image["task_status"], image["task_type"], image["credits"]) == (3, "image", 1)
    with Image.open(io.BytesIO(png_bytes)) as png:
        assert png.size == (512, 256)  # 16:9 near the tiny models' 384x384
    assert (video["task_status"], video["task_type"], video["image_url"]) == (3, "video", None)
    assert video_task["credits"] == video["credits"] == 10  # Wan: 1 s at 10 credits a second
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(mp4_bytes)
    assert imageio_ffmpeg.count_frames_and_secs(str(clip))[0] == 5  # 1 s at 4 fps, 4k+1


async def test_seed_004_client(doc_settings: Settings) -> None:
    async with serving(doc_settings) as (state, base):
        _, key = await new_account(state, "pro")
        async with KirinClient(base, key) as client:
            task_id = await client.create(
                model="kirin_v2_image",
                prompt="a lighthouse on a cliff at dawn",
                negative_prompt="blurry",
                n=3,
                aspect_ratio="3:4",
            )
            async with running_worker(state):
                task = await client.wait(task_id)
            assert task["status"] == "completed" and "error" not in task
            urls = [c["url"] for c in task["output"]["content"] if c["type"] == "image"]
            images = [await download(url) for url in urls]
    assert len(images) == 3
    for data in images:
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (320, 448)  # 3:4 near 384x384
