"""Video with Wan 2.2 TI2V (a tiny random-weight pipeline) through a real server and worker: the
OpenAI Videos API driven by the official `openai` SDK, and seed 002's seedance-2 with a first
frame; refusals charge and store nothing."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import imageio_ffmpeg
import openai
import pytest
import torch
from openai import OpenAI
from PIL import Image
from sqlalchemy import func, select

from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.tables import LedgerEntry, Order
from easel.orders.retention import sweep_expired
from easel.storage import MissingObject
from tests.support.app import auth, new_account, serving
from tests.support.catalogs import tiny_catalog
from tests.support.file_server import Route, file_server
from tests.support.worker import poll_until, running_worker

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    # The SDK marks its Videos methods deprecated (OpenAI retires Sora's API); they still work.
    pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning"),
]

# 1 fps keeps clips short: 4 s is 4 * 1 frames rounded up to 4k, plus the first: 5 frames.
WAN = """
[models.wan-ti2v-5b]
source = "{wan_dir}"
steps = 2
width = 64
height = 64
fps = 1
seconds = 4
max_frames = 9

[plans.pro]
max_video_seconds = 4
max_video_pixels = 6144
"""


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@asynccontextmanager
async def served(
    settings: Settings, tmp_path: Path, wan_dir: Path
) -> AsyncIterator[tuple[AppState, str]]:
    catalog = tiny_catalog(tmp_path / "catalog.toml", "/unused", extra=WAN.format(wan_dir=wan_dir))
    update = {"catalog": catalog, "min_side": 64}
    async with serving(settings.model_copy(update=update)) as served:
        yield served


def png(color: tuple[int, int, int], side: int = 320) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), color).save(out, "PNG")
    return out.getvalue()


def mp4_facts(data: bytes, tmp_path: Path) -> tuple[int, int, str, list[bytes]]:
    """(width, height, fps, decoded frames) as the bundled ffmpeg reads an MP4."""
    path = tmp_path / f"clip-{len(data)}.mp4"
    path.write_bytes(data)
    to_raw = ["-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    decoded = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path), *to_raw],
        capture_output=True,
        check=True,
    )
    probe = decoded.stderr.decode().split("Stream mapping:")[0]
    stream = re.search(r"Video: h264 .*?, (\d+)x(\d+).*?, ([\d.]+) fps", probe)
    assert stream is not None, probe
    width, height = int(stream[1]), int(stream[2])
    size = width * height * 3
    frames = [decoded.stdout[i : i + size] for i in range(0, len(decoded.stdout), size)]
    return width, height, stream[3], frames


async def orders_of(state: AppState, account_id: str) -> int:
    async with state.db.transaction(readonly=True) as s:
        query = select(func.count()).select_from(Order).where(Order.account_id == account_id)
        return int(await s.scalar(query) or 0)


async def debits(state: AppState, account_id: str) -> int:
    async with state.db.transaction(readonly=True) as s:
        query = select(func.count()).where(
            LedgerEntry.account_id == account_id, LedgerEntry.kind == "debit"
        )
        return int(await s.scalar(query) or 0)


async def test_openai_sdk_create_poll_download_list_delete(
    settings: Settings, tmp_path: Path, tiny_wan: Path
) -> None:
    async with served(settings, tmp_path, tiny_wan) as (state, base):
        _, key = await new_account(state, "pro")
        client = OpenAI(api_key=key, base_url=f"{base}/v1", max_retries=0)

        def make() -> tuple[Any, Any, bytes, bytes]:
            text = client.videos.create_and_poll(
                model="sora-2", prompt="a fox running", seconds="4", size="72x64",
                poll_interval_ms=100,
            )  # fmt: skip
            first = client.videos.create_and_poll(
                model="seedance-2",
                prompt="a fox running",
                size="64x96",
                input_reference=("first.png", png((200, 30, 30)), "image/png"),
                poll_interval_ms=100,
            )
            clip = client.videos.download_content(text.id).content
            thumbnail = client.videos.download_content(first.id, variant="thumbnail").content
            return text, first, clip, thumbnail

        async with running_worker(state):
            text, first, clip, thumbnail = await asyncio.to_thread(make)
        assert (text.status, text.progress, text.model, text.seconds, text.size) == (
            "completed", 100, "sora-2", "4", "72x64",
        )  # fmt: skip
        assert (first.status, first.size, first.seconds) == ("completed", "64x96", "4")
        width, height, fps, frames = mp4_facts(clip, tmp_path)
        # 72 is no multiple of 32: made at 96x64 and centre-cropped to what was asked.
        assert (width, height, fps, len(frames)) == (72, 64, "1", 5)
        with Image.open(io.BytesIO(thumbnail)) as still:
            assert (still.format, still.size) == ("JPEG", (64, 96))
        async with state.db.transaction(readonly=True) as s:
            order = await s.get(Order, first.id)
            assert order is not None
            assert (order.model, order.frames, order.cost_credits) == ("wan-ti2v-5b", 5, 40)
            assert order.reference_key is not None

        listed = await asyncio.to_thread(lambda: client.videos.list(limit=1))
        assert [v.id for v in listed.data] == [first.id] and listed.has_more
        rest = await asyncio.to_thread(lambda: listed.get_next_page())
        assert [v.id for v in rest.data] == [text.id]
        stored = [f"{text.id}/0.mp4", f"{text.id}/0.poster.jpg"]
        assert all(state.storage.get(key) for key in stored)
        deleted = await asyncio.to_thread(client.videos.delete, text.id)
        assert (deleted.id, deleted.deleted, deleted.object) == (text.id, True, "video.deleted")
        for key in stored:  # the clip and its poster
            with pytest.raises(MissingObject):
                state.storage.get(key)
        with pytest.raises(openai.NotFoundError, match="deleted"):
            await asyncio.to_thread(client.videos.retrieve, text.id)
        everything = await asyncio.to_thread(lambda: client.videos.list())
        assert [v.id for v in everything.data] == [first.id]
        card = (await asyncio.to_thread(client.models.retrieve, "sora-2")).model_extra or {}
        assert card["capabilities"] == ["text_to_video", "image_to_video"]
        assert (card["max_seconds"], card["credits_per_second"]) == (8, 10)
        # Expired: the retention sweep deletes the clip, its poster and its first frame.
        assert order.reference_key is not None
        keys = [f"{first.id}/0.mp4", f"{first.id}/0.poster.jpg", order.reference_key]
        assert all(state.storage.get(key) for key in keys)
        later = utcnow() + timedelta(days=400)
        assert await sweep_expired(state.db, state.storage, later) == 1  # the other was deleted
        for key in keys:
            with pytest.raises(MissingObject):
                state.storage.get(key)


ONE_DATABASE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # no SQL of its own


@ONE_DATABASE
async def test_seed_002_seedance_first_frame_decides_the_video(
    settings: Settings, tmp_path: Path, tiny_wan: Path
) -> None:
    routes = {"/red.png": Route(png((200, 30, 30))), "/green.png": Route(png((30, 200, 30)))}
    async with served(settings, tmp_path, tiny_wan) as (state, base):
        _, key = await new_account(state, "pro")
        with file_server(routes) as files:
            async with httpx.AsyncClient(base_url=base, headers=auth(key)) as http:

                async def create(image: str | None) -> str:
                    body: dict[str, Any] = {
                        "model_id": "seedance-2",
                        "prompt": "a fox running",
                        "seed": 7,
                    }
                    if image:
                        body["image_urls"] = [files.url(image)]
                    created = (await http.post("/api/v1/tasks/create", json=body)).json()
                    assert created["code"] == 200, created
                    return str(created["data"]["task_id"])

                async def finished(task_id: str) -> dict[str, Any]:
                    async def fetch() -> dict[str, Any]:
                        return dict((await http.get(f"/api/v1/tasks/{task_id}")).json()["data"])

                    done = await poll_until(fetch, lambda d: d["task_status"] in (3, 4))
                    assert done["task_status"] == 3, done
                    assert done["task_type"] == "video" and done["credits"] == 40
                    return done

                # All queued before the worker starts: it could batch them, but runs each alone.
                ids = [await create(i) for i in ("/red.png", "/green.png", "/red.png", None)]
                async with running_worker(state) as worker:
                    made = [await finished(i) for i in ids]
                assert sorted(map(len, worker.recent_batches)) == [1, 1, 1, 1]
                clips = [(await http.get(d["video_url"])).content for d in made]
        frames = [mp4_facts(c, tmp_path)[3] for c in clips]
        assert all(len(f) == 5 for f in frames)
        assert frames[0] == frames[2]  # the same first frame and seed: the same video
        assert frames[0] != frames[1]  # another first frame: another video
        assert frames[3] not in (frames[0], frames[1])  # from text alone
        async with state.db.transaction(readonly=True) as s:
            orders = [await s.get(Order, d["task_id"]) for d in made]
        assert [o.model for o in orders if o] == ["wan-ti2v-5b"] * 4


@ONE_DATABASE
async def test_refusals_charge_and_store_nothing(
    settings: Settings, tmp_path: Path, tiny_wan: Path
) -> None:
    async with served(settings, tmp_path, tiny_wan) as (state, base):
        account, key = await new_account(state, "pro")
        client = OpenAI(api_key=key, base_url=f"{base}/v1", max_retries=0)
        create = client.videos.create

        def refused() -> list[openai.APIStatusError]:
            errors = []
            for ask in (
                {"seconds": "8"},  # the plan's limit is 4
                {"seconds": "12"},  # the model's is 8 (9 frames at 1 fps)
                {"size": "64x128"},  # the plan's limit is 6144 pixels
                {"size": "big"},
                {"size": "64x65"},
                {"seconds": "four"},
                {"model": "sora-2-pro"},
            ):
                with pytest.raises(openai.APIStatusError) as caught:
                    create(prompt="a fox", **{"model": "sora-2", "size": "64x64", **ask})
                errors.append(caught.value)
            return errors

        errors = await asyncio.to_thread(refused)
        statuses = [e.status_code for e in errors]
        assert statuses == [403, 400, 403, 400, 400, 400, 400]
        params = [e.body["param"] for e in errors if isinstance(e.body, dict)]
        assert params == ["seconds", "seconds", "size", "size", "size", "seconds", "model"]
        assert "at most 4 seconds" in errors[0].message
        assert "1 to 8 seconds" in errors[1].message
        assert "accepted: sora-2, seedance-2" in errors[6].message
        async with httpx.AsyncClient(base_url=base, headers=auth(key)) as http:
            two = ["http://127.0.0.1:9/a.png", "http://127.0.0.1:9/b.png"]
            refused_task = await http.post(
                "/api/v1/tasks/create",
                json={"model_id": "seedance-2", "prompt": "a fox", "image_urls": two},
            )
        assert refused_task.status_code == 200  # seed 002's shape: a business failure, code 0
        assert refused_task.json()["code"] == 0
        assert "at most 1 image(s) to make a video from an image" in refused_task.json()["msg"]
        assert await orders_of(state, account.id) == 0
        assert await debits(state, account.id) == 0
        outputs = state.settings.outputs_dir
        assert not outputs.exists() or not any(p.is_file() for p in outputs.rglob("*"))
