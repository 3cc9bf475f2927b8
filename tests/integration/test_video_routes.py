"""Which model a video request runs on, its length and price, per route and input (JSON first
frames, provider keys), and the Videos API's answers before a video is made. No worker: the
orders wait in the queue."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select, update

from easel.accounts import ledger
from easel.clock import utcnow
from easel.config import Settings
from easel.db.tables import LedgerEntry, Order, Output
from easel.dialects import console
from easel.dialects.openai_errors import form_field_bytes
from easel.errors import Conflict, InvalidRequest
from easel.media.bodies import declared_over
from easel.media.video import poster_key
from easel.orders import lifecycle
from easel.orders.inputs import OrderInputs
from easel.storage import MissingObject
from tests.support.app import app_client, auth, new_account
from tests.support.file_server import Route, file_server

pytestmark = pytest.mark.anyio
SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 320), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


@SQLITE
async def test_seedance_routes_by_input_and_by_key(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "pro")
        made = []
        for body in (
            {"model": "sora-2", "prompt": "waves", "size": "1280x720"},  # OpenAI's default 4 s
            {"model": "seedance-2", "prompt": "waves", "seconds": "5", "size": "720x1280"},
        ):
            r = await client.post("/v1/videos", json=body, headers=auth(key))
            assert r.status_code == 200, r.text
            made.append(r.json())
        assert [(v["status"], v["seconds"], v["size"]) for v in made] == [
            ("queued", "4", "1280x720"),
            ("queued", "5", "720x1280"),
        ]
        # JSON's input_reference: an image URL as the first frame (file ids are not kept here).
        with file_server({"/red.png": Route(png())}) as files:
            first = {"image_url": files.url("/red.png")}
            r = await client.post(
                "/v1/videos",
                json={"prompt": "waves", "input_reference": first, "size": "1280x720"},
                headers=auth(key),
            )
        assert r.status_code == 200, r.text
        from_image = r.json()["id"]
        r = await client.post(
            "/v1/videos",
            json={"prompt": "waves", "input_reference": {"file_id": "file-1"}},
            headers=auth(key),
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "input_reference"
        for content_type, raw in (("text/plain", b"waves"), ("application/json", b"[1]")):
            r = await client.post(
                "/v1/videos", content=raw, headers=auth(key) | {"content-type": content_type}
            )
            assert r.status_code == 400 and "JSON" in r.json()["error"]["message"], r.text
        # Content before it is made; a variant not made here.
        content = f"/v1/videos/{from_image}/content"
        r = await client.get(content, headers=auth(key))
        assert r.status_code == 409 and "is queued" in r.json()["error"]["message"]
        r = await client.get(content, params={"variant": "spritesheet"}, headers=auth(key))
        assert r.status_code == 400 and r.json()["error"]["param"] == "variant"
        # Seed 002: every aspect ratio fits the plan's pixels (21:9 is the widest).
        r = await client.post(
            "/api/v1/tasks/create",
            json={"model_id": "seedance-2", "prompt": "waves", "aspect_ratio": "21:9"},
            headers=auth(key),
        )
        assert r.json()["code"] == 200, r.text
        wide = r.json()["data"]["task_id"]
        # With Replicate's key set, seedance-2 from text goes to the provider, which makes
        # fixed-length clips: no seconds, or a 400 that says to remove them.
        monkeypatch.setenv("REPLICATE_API_TOKEN", "r8-test")
        r = await client.post("/v1/videos", json={"model": "seedance-2", "prompt": "waves"},
                              headers=auth(key))  # fmt: skip
        assert r.status_code == 200, r.text
        made.append(r.json())
        r = await client.post(
            "/v1/videos",
            json={"model": "seedance-2", "prompt": "waves", "seconds": "4"},
            headers=auth(key),
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "seconds"
        assert "fixed length" in r.json()["error"]["message"]
        async with state.db.transaction(readonly=True) as s:
            orders = {o.id: o for o in await s.scalars(select(Order))}
        routed = [orders[v["id"]] for v in made]
        assert [(o.model, o.frames, o.cost_credits) for o in routed] == [
            ("wan-ti2v-5b", 97, 40),  # 4 s at 24 fps, 10 credits a second
            ("wan-ti2v-5b", 121, 50),
            ("seedance-2", 16, 16),  # the provider's clip: animation_16f
        ]
        assert made[2]["seconds"] == "2"  # 16 frames at 8 fps
        assert (orders[wide].width, orders[wide].height, orders[wide].frames) == (1472, 640, 121)
        assert orders[from_image].model == "wan-ti2v-5b" and orders[from_image].reference_key
        assert all(o.account_id == account.id for o in routed)


@SQLITE
async def test_seconds_that_are_not_ascii_digits_are_a_400(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "pro")
        for seconds in ("²", "٤", "9" * 5000, "0", "-4", " 4"):
            r = await client.post(
                "/v1/videos", json={"prompt": "waves", "seconds": seconds}, headers=auth(key)
            )
            assert r.status_code == 400, (seconds[:10], r.text)
            assert r.json()["error"]["param"] == "seconds"
        # Multipart: a field given twice is refused, not the last one taken; a text field past
        # what the settings allow (4 bytes a character of the longest prompt) is refused whole.
        for names in (["prompt", "prompt"], ["prompt", "seconds", "seconds"]):
            fields = [(name, (None, "1")) for name in names]
            r = await client.post("/v1/videos", files=fields, headers=auth(key))
            assert r.status_code == 400 and "more than once" in r.json()["error"]["message"], r.text
        r = await client.post(
            "/v1/videos",
            files={"prompt": (None, "x" * (4 * settings.max_prompt_chars + 4097))},
            headers=auth(key),
        )
        assert r.status_code == 400 and str(form_field_bytes(settings)) in r.text, r.text
        # The console's size preset: the same digits.
        model = state.catalog.style(state.catalog.style_names[0])
        assert model is not None
        with pytest.raises(InvalidRequest, match="size must look like"):
            console._size({"size": "²x²"}, model)
        # A Content-Length header: only ASCII digits, never parsed past the limit's length.
        assert declared_over("9" * 5000, 10) and declared_over("011", 10)
        assert not declared_over("²", 10) and not declared_over("0010", 10)
        async with state.db.transaction(readonly=True) as s:
            assert list(await s.scalars(select(Order))) == []


async def test_delete_queued_videos_and_list_across_pages(settings: Settings) -> None:
    """Deleting a queued video cancels and refunds it; listing skips deleted videos in the
    database, so every page but the last is full (the SDK stops at an empty page)."""
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "pro")
        _, other_key = await new_account(state, "pro")
        ids = []
        for n in range(4):
            r = await client.post(
                "/v1/videos", json={"prompt": f"waves {n}", "seconds": "1"}, headers=auth(key)
            )
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])
        async with state.db.transaction(readonly=True) as s:
            start = (await ledger.balance(s, account.id, utcnow())).total
        r = await client.delete(f"/v1/videos/{ids[3]}", headers=auth(other_key))
        assert r.status_code == 404 and "error" in r.json(), r.text
        for gone in (ids[3], ids[2]):  # the two newest
            r = await client.delete(f"/v1/videos/{gone}", headers=auth(key))
            assert r.json() == {"id": gone, "object": "video.deleted", "deleted": True}, r.text
        r = await client.get(f"/v1/videos/{ids[3]}", headers=auth(key))
        assert r.status_code == 404 and "deleted" in r.json()["error"]["message"]
        async with state.db.transaction(readonly=True) as s:
            orders = {o.id: o for o in await s.scalars(select(Order))}
            refunds = list(await s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "refund")))
            end = (await ledger.balance(s, account.id, utcnow())).total
        assert [orders[i].status for i in ids] == ["pending", "pending", "canceled", "canceled"]
        assert sorted(e.order_id for e in refunds) == sorted(ids[2:])
        assert end == start + orders[ids[2]].cost_credits + orders[ids[3]].cost_credits
        pages, after = [], None
        while True:
            params = {"limit": 1} | ({"after": after} if after else {})
            r = await client.get("/v1/videos", params=params, headers=auth(key))
            page = r.json()
            pages.append([v["id"] for v in page["data"]])
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert pages == [[ids[1]], [ids[0]]]


@SQLITE
async def test_delete_finished_video_removes_every_file_after_commit(settings: Settings) -> None:
    """The files DELETE removes are the sweeper's list (retention.stored_keys): outputs, the
    poster, the first frame and further inputs. The order is made finished in the database
    (no worker in this file); its files are put in storage as a worker would."""
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "pro")
        r = await client.post(
            "/v1/videos",
            data={"prompt": "waves", "seconds": "1", "size": "320x320"},
            files={"input_reference": ("red.png", png(), "image/png")},
            headers=auth(key),
        )
        assert r.status_code == 200, r.text
        video_id = r.json()["id"]
        files = [f"{video_id}/0.mp4", f"{video_id}/0.poster.jpg", f"{video_id}/reference-2.png"]
        async with state.db.transaction() as s:
            order = await s.get(Order, video_id)
            assert order is not None and order.reference_key
            files.append(order.reference_key)
            order.status, order.inputs = "completed", OrderInputs(images=(files[2],)).dump()
            s.add(Output(order_id=video_id, index=0, storage_key=files[0], content_type="video/mp4",
                         seed=1, width=320, height=320, bytes=3, created_at=utcnow()))  # fmt: skip
        assert poster_key(files[0]) == files[1]
        for name in files[:3]:
            state.storage.put(name, b"mp4", "application/octet-stream")
        r = await client.delete(f"/v1/videos/{video_id}", headers=auth(key))
        assert r.status_code == 200, r.text
        for name in files:
            with pytest.raises(MissingObject):
                state.storage.get(name)
        async with state.db.transaction(readonly=True) as s:
            order = await s.get(Order, video_id)
            assert order is not None and order.outputs_swept


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_cancel_sees_a_video_claimed_or_finished_since_it_was_read(
    settings: Settings,
) -> None:
    """DELETE reads the video, then cancels it: a worker may have claimed or finished it in
    between (PostgreSQL runs both at once). cancel() acts on the row as it is now."""
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "pro")
        for now_status, expected in (("running", "running"), ("completed", "Conflict")):
            r = await client.post(
                "/v1/videos", json={"prompt": "waves", "seconds": "1"}, headers=auth(key)
            )
            video_id = r.json()["id"]
            async with state.db.transaction() as s:
                seen = await s.get(Order, video_id)
                assert seen is not None and seen.status == "pending"
                async with state.db.transaction() as worker:
                    await worker.execute(
                        update(Order).where(Order.id == video_id)
                        .values(status=now_status, worker_id="w-1")
                    )  # fmt: skip
                try:
                    after = (await lifecycle.cancel(s, account.id, video_id, utcnow())).status
                except Conflict:
                    after = "Conflict"
            assert after == expected
            async with state.db.transaction(readonly=True) as s:
                order = await s.get(Order, video_id)
                assert order is not None and order.status == now_status
                assert order.cancel_requested == (now_status == "running")


@SQLITE
async def test_seedance_first_frame_sets_the_aspect_ratio(settings: Settings) -> None:
    """Seed 002 without aspect_ratio: the clip follows its first frame (a 16:9 image makes a
    16:9 clip at the model's size, not a square that crops it); a given one is kept."""
    wide = io.BytesIO()
    Image.new("RGB", (640, 360), (20, 90, 200)).save(wide, "PNG")
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "pro")
        ids = []
        with file_server({"/wide.png": Route(wide.getvalue())}) as files:
            for extra in ({}, {"aspect_ratio": "1:1"}):
                r = await client.post(
                    "/api/v1/tasks/create",
                    json={"model_id": "seedance-2", "prompt": "waves",
                          "image_urls": [files.url("/wide.png")]} | extra,
                    headers=auth(key),
                )  # fmt: skip
                assert r.json()["code"] == 200, r.text
                ids.append(r.json()["data"]["task_id"])
        async with state.db.transaction(readonly=True) as s:
            orders = [await s.get(Order, i) for i in ids]
        assert [(o.width, o.height) for o in orders if o] == [(1280, 704), (960, 960)]


@SQLITE
async def test_video_bounds_of_the_model_and_a_shorter_plan(
    settings: Settings, tmp_path: Path
) -> None:
    """The model bounds a frame's pixels where the plan sets none; seed 002 (no length field)
    makes the plan's longest clip when that is shorter than the model's default."""
    path = tmp_path / "plans.toml"
    path.write_text("[plans.pro]\nmax_video_seconds = 3\nmax_video_pixels = 0\n")
    async with app_client(settings.model_copy(update={"catalog": path})) as (client, state):
        _, key = await new_account(state, "pro")
        r = await client.post(
            "/v1/videos",
            json={"prompt": "waves", "seconds": "3", "size": "2048x2048"},
            headers=auth(key),
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "size", r.text
        assert "1048576" in r.json()["error"]["message"]
        r = await client.post(
            "/api/v1/tasks/create",
            json={"model_id": "seedance-2", "prompt": "waves", "aspect_ratio": "16:9"},
            headers=auth(key),
        )
        assert r.json()["code"] == 200, r.text
        assert r.json()["data"]["credits"] == 30
        async with state.db.transaction(readonly=True) as s:
            (order,) = await s.scalars(select(Order))
        assert (order.frames, order.cost_credits) == (73, 30)  # 3 s at 24 fps
