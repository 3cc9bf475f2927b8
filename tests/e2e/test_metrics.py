"""HTTP -> worker -> /metrics: an order that completes and one that fails (its provider does not
answer) show as claim and generation times, final statuses and a refund, on SQLite and
PostgreSQL. The worker runs on a remote-provider family, so no torch is loaded."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from easel.config import Settings
from tests.support import remote_backend
from tests.support.app import auth, free_port, new_account, serving
from tests.support.catalogs import tiny_catalog
from tests.support.metrics import scrape
from tests.support.worker import running_worker, wait_status

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_claims_generation_final_statuses_and_refunds(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote_backend.register(monkeypatch)
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens: generation fails
    with remote_backend.image_server(delay=0.05) as server:
        models = remote_backend.catalog_table(server.url) + remote_backend.catalog_table(
            nobody, model_id="remote-dead", style="dead"
        )
        catalog = tiny_catalog(tmp_path / "catalog.toml", tmp_path, extra=models)
        settings = settings.model_copy(update={"catalog": catalog})
        async with serving(settings) as (state, base), httpx.AsyncClient(base_url=base) as client:
            _, key = await new_account(state, "standard")
            ids = {}
            for style in ("remote", "dead"):
                body = {"style": style, "prompt": "a red fox"}
                r = await client.post("/api/v1/generate", json=body, headers=auth(key))
                assert r.status_code == 200, r.text
                ids[style] = r.json()["order_id"]
            before = await scrape(client)
            assert before.value("easel_queue_depth", priority="2") == 2
            async with running_worker(state, models=["remote-x", "remote-dead"]):
                done = await wait_status(client, ids["remote"], auth(key))
                failed = await wait_status(client, ids["dead"], auth(key))
            after = await scrape(client)
    assert (done["status"], failed["status"]) == ("completed", "failed")
    assert failed["error"]["code"] == "generation_failed"

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    completed = {"status": "completed", "model": "remote-x"}
    assert delta("easel_orders_finished_total", **completed) == 1
    lost = {"status": "failed", "model": "remote-dead", "code": "generation_failed"}
    assert delta("easel_orders_finished_total", **lost) == 1
    assert delta("easel_refunds_total", status="failed") == 1
    assert delta("easel_refunded_credits_total", status="failed") == 1
    assert delta("easel_refunds_total", status="canceled") == 0
    assert delta("easel_generation_duration_seconds_count", model="remote-x") == 1
    assert delta("easel_generation_duration_seconds_count", model="remote-dead") == 0
    # one claim per remote order (EASEL_REMOTE_CLAIM_MAX's default, 1)
    assert delta("easel_claim_duration_seconds_count", outcome="claimed") == 2
    assert delta("easel_worker_heartbeats_total") >= 1
    assert after.value("easel_queue_depth") == 0
    assert after.value("easel_orders_running") == 0
