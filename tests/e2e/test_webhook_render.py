"""Callback bodies are rendered when they are sent: a delivery retried after its first output URL
expired carries URLs that download, under the same webhook-id."""

from __future__ import annotations

from pathlib import Path

import pytest

from easel.config import Settings
from tests.support.app import app_client, auth, new_account
from tests.support.catalogs import tiny_catalog
from tests.support.receiver import webhook_receiver
from tests.support.worker import running_worker, wait_status

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

BODY = {"style": "general", "prompt": "a lantern in fog", "width": 256, "height": 256}
TTL = 2  # seconds an output URL is valid


async def test_a_retried_delivery_carries_urls_signed_when_sent(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    settings = settings.model_copy(
        update={
            "catalog": tiny_catalog(tmp_path / "catalog.toml", tiny_sdxl),
            "url_ttl_seconds": TTL,
            "webhook_retry_first": TTL + 1.5,  # the retry comes after the first URL expired
            "webhook_retry_factor": 1.0,
        }
    )
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        with webhook_receiver(refuse_first=1) as hooks:
            r = await client.post(
                "/api/v1/generate", json=BODY | {"webhook_url": hooks.url}, headers=auth(key)
            )
            assert r.status_code == 200, r.text
            order_id = r.json()["order_id"]
            async with running_worker(state):
                assert (await wait_status(client, order_id, auth(key)))["status"] == "completed"
                [accepted] = await hooks.arrived(1, timeout=60)
                # at once: its URL was signed when it was sent, so it is valid for TTL from then
                fresh = await client.get(accepted.body["output_urls"][0])
            [refused] = hooks.refused
        stale = await client.get(refused.body["output_urls"][0])
    assert accepted.headers["webhook-id"] == refused.headers["webhook-id"]
    assert accepted.body["order_id"] == refused.body["order_id"] == order_id
    assert accepted.body["output_urls"] != refused.body["output_urls"]
    assert fresh.status_code == 200 and fresh.content.startswith(b"\x89PNG")
    assert stale.status_code != 200  # the URL sent first has expired
