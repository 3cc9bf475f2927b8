"""Submit -> worker -> real tiny SDXL pipeline -> storage -> signed URL, in one process."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from PIL import Image

from easel.accounts import ledger
from easel.clock import utcnow
from easel.config import Settings
from tests.support.app import app_client, auth, new_account
from tests.support.catalogs import tiny_catalog
from tests.support.receiver import webhook_receiver
from tests.support.seeds import SEED_000_BODY as SEED_000
from tests.support.worker import running_worker, wait_status

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SEED_000_BODY = {k: v for k, v in SEED_000.items() if k != "webhook_url"}


async def submit(client: httpx.AsyncClient, key: str, body: dict[str, object]) -> str:
    r = await client.post("/api/v1/generate", json=body, headers=auth(key))
    assert r.status_code == 200, r.text
    order_id: str = r.json()["order_id"]
    return order_id


def tiny(settings: Settings, tmp_path: Path, model_dir: Path | str, **kw: object) -> Settings:
    catalog = tiny_catalog(tmp_path / "catalog.toml", model_dir, **kw)  # type: ignore[arg-type]
    return settings.model_copy(update={"catalog": catalog})


async def test_seed_000_order_completes_with_a_png_of_the_asked_size(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    settings = tiny(settings, tmp_path, tiny_sdxl)
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "pro")
        with webhook_receiver() as hooks:
            body = SEED_000_BODY | {"webhook_url": hooks.url}
            r = await client.post("/api/v1/generate", json=body, headers=auth(key))
            order_id = r.json()["order_id"]
            async with running_worker(state):
                status = await wait_status(client, order_id, auth(key))
                calls = await hooks.arrived(1)
        assert status["status"] == "completed", status
        assert status["progress"] == 100
        assert len(status["output_urls"]) == 1
        url = status["output_urls"][0]
        assert url.startswith(settings.base_url + "/files/")
        image_bytes = (await client.get(url)).content
        image = Image.open(io.BytesIO(image_bytes))
        assert (image.format, image.size) == ("PNG", (768, 1152))
        params = json.loads(image.info["parameters"])
        assert image.info["seed"] == str(status["seed"]) == str(params["seed"])
        assert "a warrior in red" in image.info["prompt"]
        assert image.info["model"] == "sdxl-guofeng"
        assert calls[0].body == {
            "order_id": order_id,
            "status": "completed",
            "output_urls": calls[0].body["output_urls"],
        }
        assert len(calls[0].body["output_urls"]) == 1


async def test_signed_urls_refuse_tampering_and_expiry(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    settings = tiny(settings, tmp_path, tiny_sdxl)
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        body = SEED_000_BODY | {"width": 256, "height": 256}
        order_id = await submit(client, key, body)
        async with running_worker(state):
            status = await wait_status(client, order_id, auth(key))
        url = status["output_urls"][0]
        assert (await client.get(url)).status_code == 200
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        bad_sig = f"{parts.path}?expires={query['expires'][0]}&signature={'0' * 64}"
        assert (await client.get(bad_sig)).status_code == 403
        non_ascii = f"{parts.path}?expires={query['expires'][0]}&signature=%C3%A9"
        assert (await client.get(non_ascii)).status_code == 403
        later = int(query["expires"][0]) + 10
        stretched = f"{parts.path}?expires={later}&signature={query['signature'][0]}"
        assert (await client.get(stretched)).status_code == 403
        expired_key = parts.path.removeprefix("/files/")
        past = int(time.time()) - 5
        signed_past = state.storage.sign(expired_key, past)
        r = await client.get(f"{parts.path}?expires={past}&signature={signed_past}")
        assert r.status_code == 403
        assert "expired" in r.json()["error"]["message"]


async def test_same_seed_same_image_and_seed_reported(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    settings = tiny(settings, tmp_path, tiny_sdxl)
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        body = SEED_000_BODY | {"width": 512, "height": 512, "seed": 1234}
        results = []
        async with running_worker(state):
            # One at a time: each its own pipeline call, as a client re-running an order sees it
            # (a batch of other sizes may differ in the last bit on the CPU).
            for b in (body, body, body | {"seed": 99}):
                results.append(await wait_status(client, await submit(client, key, b), auth(key)))
        pixels = []
        for result in results:
            data = (await client.get(result["output_urls"][0])).content
            pixels.append(Image.open(io.BytesIO(data)).tobytes())
        assert [r["seed"] for r in results] == [1234, 1234, 99]
        assert results[0]["outputs"][0]["seed"] == 1234
        assert pixels[0] == pixels[1]
        assert pixels[0] != pixels[2]


async def test_unloadable_model_fails_with_how_to_fix_and_refunds(
    settings: Settings, tmp_path: Path
) -> None:
    settings = tiny(settings, tmp_path, "/nonexistent/weights/sdxl")
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "standard")
        order_id = await submit(client, key, SEED_000_BODY)
        async with running_worker(state):
            status = await wait_status(client, order_id, auth(key))
        assert status["status"] == "failed"
        assert status["error"]["code"] == "model_unavailable"
        message = status["error"]["message"]
        assert "sdxl-guofeng" in message and "/nonexistent/weights/sdxl" in message
        assert "EASEL_CATALOG" in message
        async with state.db.transaction() as s:
            assert (await ledger.balance(s, account.id, utcnow())).total == 300


async def test_uncached_hub_model_offline_names_the_repo(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    settings = tiny(settings, tmp_path, "easel-test/not-a-cached-model")
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        order_id = await submit(client, key, SEED_000_BODY)
        async with running_worker(state):
            status = await wait_status(client, order_id, auth(key))
        assert status["status"] == "failed"
        message = status["error"]["message"]
        assert "easel-test/not-a-cached-model" in message
        assert "HF_HUB_OFFLINE" in message
        assert "hf download easel-test/not-a-cached-model" in message


async def test_cancel_running_order_stops_at_next_step_and_refunds(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    settings = tiny(settings, tmp_path, tiny_sdxl, steps=60)
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "standard")
        order_id = await submit(client, key, SEED_000_BODY)
        async with running_worker(state):
            running = await wait_status(
                client, order_id, auth(key), until=("running",), check=lambda b: b["step"] >= 1
            )
            assert running["total_steps"] == 60
            r = await client.post(f"/api/v1/orders/{order_id}/cancel", headers=auth(key))
            assert r.json()["cancel_requested"] is True
            status = await wait_status(client, order_id, auth(key))
        assert status["status"] == "canceled"
        assert status["step"] < 60
        async with state.db.transaction() as s:
            assert (await ledger.balance(s, account.id, utcnow())).total == 300
