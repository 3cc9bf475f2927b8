"""Seeds 001, 002 and 004 through the HTTP API in-process: their own examples verbatim, their
response and error shapes, and nothing charged for a refused request (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from easel.config import Settings
from tests.support.app import app_client, auth, new_account
from tests.support.audit import nothing_happened
from tests.support.seeds import SEED_001_BODY, SEED_002_BODY, SEED_002_CURL_BODY

pytestmark = pytest.mark.anyio

ISO_SECONDS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def png_base64(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


async def test_kie_seed_001_example_and_record_info(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "pro")
        r = await client.post("/api/v1/qwen/generate", json=SEED_001_BODY, headers=auth(key))
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["code"], body["msg"]) == (200, "success")
        task_id = body["data"]["taskId"]
        r = await client.get(f"/api/v1/qwen/record-info?taskId={task_id}", headers=auth(key))
        info = r.json()
        assert (info["code"], info["data"]["taskId"], info["data"]["successFlag"]) == (
            200,
            task_id,
            0,
        )
        assert info["successFlag"] == 0  # the document's example reads the record at the top
        assert re.fullmatch(ISO_SECONDS, info["data"]["createTime"])
        assert info["data"]["completeTime"] is None
        assert info["data"]["param"]["image_size"] == "landscape_16_9"
        native = (await client.get(f"/api/v1/status/{task_id}", headers=auth(key))).json()
        # landscape_16_9 -> 1024x576; regular acceleration costs 7 credits per image (catalog)
        assert (native["width"], native["height"], native["cost"]) == (1024, 576, 7)
        account_info = (await client.get("/api/v1/account", headers=auth(key))).json()
        assert account_info["credits"]["total"] == 800 - 7
        assert account.id


async def test_kie_errors_are_enveloped_and_charge_nothing(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "standard")
        bad = [
            (SEED_001_BODY | {"image_size": "huge"}, "image_size"),
            (SEED_001_BODY | {"acceleration_level": "turbo"}, "acceleration_level"),
            (SEED_001_BODY | {"output_format": "gif"}, "output_format"),
            (SEED_001_BODY | {"num_inference_steps": 0}, "steps"),
            (SEED_001_BODY | {"callBackUrl": "not a url"}, "callBackUrl"),
            ({"image_size": "square"}, "prompt"),
        ]
        for body, word in bad:
            r = await client.post("/api/v1/qwen/generate", json=body, headers=auth(key))
            assert r.status_code == 422, (body, r.text)
            envelope = r.json()
            assert envelope["code"] == 422 and envelope["data"] is None, envelope
            assert word in envelope["msg"], envelope
        r = await client.post("/api/v1/qwen/generate", json=SEED_001_BODY)
        assert (r.status_code, r.json()["code"]) == (401, 401)
        assert "Bearer" in r.json()["msg"]
        r = await client.get("/api/v1/qwen/record-info?taskId=ORD-1", headers=auth(key))
        assert (r.status_code, r.json()["code"]) == (404, 404)
        await nothing_happened(state, account.id, 300)


async def test_task_api_seed_002_examples(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "pro")
        for body in (SEED_002_BODY, SEED_002_CURL_BODY):
            r = await client.post("/api/v1/tasks/create", json=body, headers=auth(key))
            assert r.status_code == 200, r.text
            created = r.json()
            assert created["code"] == 200 and created["msg"]
            data = created["data"]
            assert set(data) == {"task_id", "request_id", "credits"}
            assert data["credits"] == 1
            r = await client.get(f"/api/v1/tasks/{data['task_id']}", headers=auth(key))
            task = r.json()
            assert (task["code"], task["msg"]) == (200, "ok")
            assert task["data"] | {"created_at": 0} == {
                "task_id": data["task_id"],
                "task_status": 1,
                "task_type": "image",
                "model_id": "gpt-image-2",
                "image_url": None,
                "image_urls": [],
                "video_url": None,
                "audio_url": None,
                "credits": 1,
                "progress": 0,
                "created_at": 0,
                "completed_at": None,
            }
            assert isinstance(task["data"]["created_at"], int)
        native = (await client.get(f"/api/v1/status/{data['task_id']}", headers=auth(key))).json()
        assert (native["width"], native["height"]) == (1344, 768)  # 16:9 at SDXL's 1024^2


async def test_task_api_errors(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "standard")
        r = await client.post(
            "/api/v1/tasks/create", json=SEED_002_BODY | {"model_id": "flux"}, headers=auth(key)
        )
        assert r.status_code == 200  # seed 002: a business failure is HTTP 200 with code 0
        body = r.json()
        assert body["code"] == 0 and body["data"] is None
        for accepted in ("gpt-image-2", "nano-banana-2", "seedance-2"):
            assert accepted in body["msg"]
        r = await client.post(
            "/api/v1/tasks/create", json=SEED_002_BODY | {"aspect_ratio": "5:1"}, headers=auth(key)
        )
        assert (r.status_code, r.json()["code"]) == (200, 0) and "16:9" in r.json()["msg"]
        r = await client.post(
            "/api/v1/tasks/create",
            json=SEED_002_BODY | {"image_urls": [f"https://a.example/{n}.png" for n in range(4)]},
            headers=auth(key),
        )
        assert r.json()["code"] == 0 and "at most 3" in r.json()["msg"]
        r = await client.post(
            "/api/v1/tasks/create", json=SEED_002_BODY, headers=auth("sk-not-a-key")
        )
        assert (r.status_code, r.json()["code"]) == (401, 401)  # only a bad key is HTTP 401
        r = await client.get("/api/v1/tasks/ORD-nope", headers=auth(key))
        assert (r.status_code, r.json()["code"], r.json()["data"]) == (200, 0, None)
        # standard has no animation: seedance-2 is refused with the plan named
        r = await client.post(
            "/api/v1/tasks/create",
            json=SEED_002_BODY | {"model_id": "seedance-2"},
            headers=auth(key),
        )
        assert r.status_code == 200 and r.json()["code"] == 0
        assert "animation" in r.json()["msg"]
        await nothing_happened(state, account.id, 300)


async def test_kirin_create_query_and_external_id(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "pro")
        other_account, other_key = await new_account(state, "pro")
        body = {
            "model": "kirin_v2_image",
            "prompt": "a lighthouse on a cliff at dawn",
            "n": 2,
            "external_task_id": "job-1",
        }
        r = await client.post("/kirin/v1/images/generations", json=body, headers=auth(key))
        assert r.status_code == 200, r.text
        task = r.json()
        assert task["status"] == "submitted"
        assert "output" not in task and "usage" not in task and "error" not in task
        task_id = task["task_id"]
        r = await client.get(f"/kirin/v1/images/generations/{task_id}", headers=auth(key))
        assert r.json()["task_id"] == task_id
        r = await client.get(
            "/kirin/v1/images/generations?external_task_id=job-1", headers=auth(key)
        )
        assert r.json()["task_id"] == task_id
        native = (await client.get(f"/api/v1/status/{task_id}", headers=auth(key))).json()
        assert (native["width"], native["height"], native["n"]) == (1344, 768, 2)  # 16:9 default
        # external_task_id is unique per account: a clear 409 here, fine for another account
        r = await client.post("/kirin/v1/images/generations", json=body, headers=auth(key))
        assert r.status_code == 409
        assert "job-1" in r.json()["error"]["error_message"]
        r = await client.post("/kirin/v1/images/generations", json=body, headers=auth(other_key))
        assert r.status_code == 200
        # another account's task is not visible, by id or by external id
        r = await client.get(f"/kirin/v1/images/generations/{task_id}", headers=auth(other_key))
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert other_account.id
        # a task made through another dialect is not a kirin task
        r = await client.post("/api/v1/tasks/create", json=SEED_002_BODY, headers=auth(key))
        tasks_id = r.json()["data"]["task_id"]
        r = await client.get(f"/kirin/v1/images/generations/{tasks_id}", headers=auth(key))
        assert r.status_code == 404


async def test_kirin_refusals_charge_nothing(settings: Settings, tmp_path: Path) -> None:
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "mega")
        base = {"model": "kirin_v2_image", "prompt": "a cat"}
        bad = [
            (base | {"n": 10}, "n must be between 1 and 9"),
            (base | {"n": 0}, "n must be between 1 and 9"),
            (base | {"aspect_ratio": "5:4"}, "aspect_ratio"),
            (base | {"prompt": "x" * 2501}, "2500"),
            (base | {"negative_prompt": "x" * 2501}, "negative_prompt"),
            (base | {"model": "kirin_v1"}, "kirin_v2_image"),
            (base | {"image": "data:image/png;base64," + png_base64(400, 400)}, "without"),
            (base | {"image": png_base64(200, 400)}, "300"),
            (base | {"image": png_base64(1000, 300)}, "aspect"),
            (base | {"image": "bm90IGFuIGltYWdl"}, "image"),
        ]
        for body, words in bad:
            r = await client.post("/kirin/v1/images/generations", json=body, headers=auth(key))
            assert 400 <= r.status_code < 500, (body.keys(), r.text)
            error = r.json()["error"]
            assert set(error) >= {"code", "error_message"}
            assert words in error["error_message"], (words, error)
        await nothing_happened(state, account.id, 2000)
        stored = [p for p in settings.outputs_dir.rglob("*") if p.is_file()]
        assert stored == []


async def test_kirin_reference_is_stored_with_the_order(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "pro")
        body = {
            "model": "kirin_v2_image",
            "prompt": "the same, at night",
            "image": png_base64(400, 600),
        }
        r = await client.post("/kirin/v1/images/generations", json=body, headers=auth(key))
        assert r.status_code == 200, r.text
        task_id = r.json()["task_id"]
        stored = [p for p in settings.outputs_dir.rglob("*") if p.is_file()]
        assert [p.name for p in stored] == ["reference.png"]
        assert stored[0].parent.name == task_id
        with Image.open(stored[0]) as image:
            assert image.size == (400, 600)


async def test_every_key_works_with_every_dialect_and_errors_keep_their_shape(
    settings: Settings,
) -> None:
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "pro")
        for path, body in [
            ("/api/v1/qwen/generate", SEED_001_BODY),
            ("/api/v1/tasks/create", SEED_002_BODY),
            ("/kirin/v1/images/generations", {"model": "kirin_v2_image", "prompt": "a cat"}),
        ]:
            assert (await client.post(path, json=body, headers=auth(key))).status_code == 200
        shapes = {
            "/api/v1/qwen/generate": lambda b: set(b) == {"code", "msg", "data"},
            "/api/v1/tasks/create": lambda b: set(b) == {"code", "msg", "data"} and b["code"] == 0,
            "/kirin/v1/images/generations": lambda b: set(b["error"]) >= {"code", "error_message"},
            "/api/v1/generate": lambda b: b["ok"] is False and "message" in b["error"],
        }
        for path, shaped in shapes.items():
            r = await client.post(path, content=b"{not json", headers=auth(key))
            status = 200 if path.startswith("/api/v1/tasks/") else 422  # seed 002: code 0
            assert r.status_code == status and shaped(r.json()), (path, r.text)


async def test_openapi_groups_endpoints_by_dialect_with_the_seeds_examples(
    settings: Settings,
) -> None:
    async with app_client(settings) as (client, _):
        spec = (await client.get("/openapi.json")).json()
    tags = {
        path: op["tags"][0]
        for path, ops in spec["paths"].items()
        for op in ops.values()
        if "tags" in op
    }
    assert tags["/api/v1/generate"] == "native (seed 000)"
    assert tags["/api/v1/qwen/generate"] == "KIE Qwen Image (seed 001)"
    assert tags["/api/v1/tasks/create"] == "task API (seed 002)"
    assert tags["/kirin/v1/images/generations"] == "kirin (seed 004)"
    assert tags["/v1/images/generations"] == tags["/v1/images/edits"] == "OpenAI Images (seed 003)"
    schemas = spec["components"]["schemas"]
    assert schemas["QwenGenerateBody"]["examples"] == [SEED_001_BODY]
    assert schemas["CreateTaskBody"]["examples"] == [SEED_002_BODY]


async def test_request_bodies_are_capped_as_they_arrive(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_body_bytes": 64 * 1024})
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "pro")
        big = {"model": "kirin_v2_image", "prompt": "a cat", "image": "A" * 100_000}

        async def chunks():  # no Content-Length: only counting catches it
            yield b'{"model": "kirin_v2_image", "prompt": "a cat", "image": "'
            for _ in range(10):
                yield b"A" * 10_000
            yield b'"}'

        for kwargs in ({"json": big}, {"content": chunks()}):
            r = await client.post("/kirin/v1/images/generations", headers=auth(key), **kwargs)
            assert r.status_code == 413, r.text
            assert "EASEL_MAX_BODY_BYTES" in r.json()["error"]["error_message"]
        await nothing_happened(state, account.id, 800)
        two = ["https://a.example/1.png", "https://a.example/2.png"]
        r = await client.post(
            "/api/v1/tasks/create",
            json=SEED_002_BODY | {"model_id": "seedance-2", "image_urls": two},
            headers=auth(key),
        )
        assert (r.status_code, r.json()["code"]) == (200, 0)  # seed 002: a business failure
        assert "at most 1 image(s) to make a video from an image" in r.json()["msg"]
        assert "[image_to_video]" in r.json()["msg"]  # what seedance-2 can do here
        await nothing_happened(state, account.id, 800)
