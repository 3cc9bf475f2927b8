"""Outputs in local storage and in a real S3-compatible server; retention deletes them."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image

from easel.config import Settings
from easel.storage import LocalStorage, MissingObject, Storage
from easel.storage.s3 import S3Storage
from tests.support.app import app_client, auth, new_account
from tests.support.catalogs import tiny_catalog
from tests.support.s3 import S3Server, s3_server
from tests.support.worker import running_worker, wait_status

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

BODY = {"style": "general", "prompt": "a paper boat", "width": 256, "height": 256}


@contextmanager
def storage_for(kind: str, settings: Settings) -> Iterator[tuple[Settings, S3Server | None]]:
    if kind == "local":
        yield settings, None
        return
    with s3_server() as s3:
        yield (
            settings.model_copy(
                update={
                    "storage": "s3",
                    "s3_bucket": s3.bucket,
                    "s3_endpoint_url": s3.endpoint,
                    "s3_prefix": "easel",
                }
            ),
            s3,
        )


@pytest.mark.parametrize("kind", ["local", "s3"])
async def test_outputs_are_served_then_expire(
    kind: str, settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    settings = settings.model_copy(
        update={
            "catalog": tiny_catalog(tmp_path / "catalog.toml", tiny_sdxl),
            "output_retention_days": 3 / 86400,  # three seconds
            "sweep_interval": 0.2,
        }
    )
    with storage_for(kind, settings) as (settings, s3):
        async with app_client(settings) as (client, state):
            _, key = await new_account(state, "standard")
            order_id = (await client.post("/api/v1/generate", json=BODY, headers=auth(key))).json()[
                "order_id"
            ]
            async with running_worker(state):
                done = await wait_status(client, order_id, auth(key))
                assert done["status"] == "completed"
                assert done["outputs_expire_at"] is not None
                url = done["output_urls"][0]
                if s3 is not None:
                    assert url.startswith(f"{s3.endpoint}/{s3.bucket}/easel/{order_id}")
                    assert s3.keys() == [f"easel/{order_id}/0.png"]
                    async with httpx.AsyncClient() as outside:
                        fetched = await outside.get(url)
                else:
                    fetched = await client.get(url)
                assert fetched.status_code == 200
                assert Image.open(io.BytesIO(fetched.content)).size == (256, 256)
                expired = await wait_status(
                    client, order_id, auth(key), check=lambda b: b.get("outputs_expired")
                )
            assert expired["output_urls"] == []
            assert "expired" in expired["message"]
            if s3 is not None:
                assert s3.keys() == []
                async with httpx.AsyncClient() as outside:
                    assert (await outside.get(url)).status_code in (403, 404)
            else:
                assert (await client.get(url)).status_code == 404


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_get_returns_what_put_stored(kind: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        store: Storage
        if kind == "local":
            store = LocalStorage(tmp_path / "outputs", "secret", "http://127.0.0.1:1", 60)
        else:
            s3 = stack.enter_context(s3_server())
            store = S3Storage(s3.bucket, prefix="easel", client=s3.client())
        data = bytes(range(256)) * 40
        store.put("refs/ORD-1/reference.png", data, "image/png")
        store.put("refs/ORD-1/other.png", b"other", "image/png")
        assert store.get("refs/ORD-1/reference.png") == data
        assert store.get("refs/ORD-1/other.png") == b"other"
        with pytest.raises(MissingObject):
            store.get("refs/ORD-1/never-stored.png")
        store.delete("refs/ORD-1/reference.png")
        with pytest.raises(MissingObject):
            store.get("refs/ORD-1/reference.png")
        with pytest.raises(ValueError, match="invalid storage key"):
            store.get("../outside.png")
