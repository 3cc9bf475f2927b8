"""GET /metrics over a real server, on SQLite and PostgreSQL: requests by route template and
status, submit latency, queue depth and workers read from the database at scrape time, final
statuses and refunds, and who may read it.

The process's counters live as long as the test process, so counters are compared before and
after; figures read from the database are exact (each test has a database of its own).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from easel.clock import utcnow
from easel.config import Settings
from easel.services.webhook_sender import deliver_due
from easel.worker import presence
from tests.support.app import app_client, auth, new_account, serving
from tests.support.metrics import Scrape, scrape
from tests.support.receiver import webhook_receiver

pytestmark = pytest.mark.anyio

REQUESTS = "easel_http_requests_total"


def order(style: str = "general", **fields: object) -> dict[str, object]:
    return {"style": style, "product_type": "static_image", "prompt": "a red fox"} | fields


async def submit(client: httpx.AsyncClient, key: str, style: str = "general") -> str:
    r = await client.post("/api/v1/generate", json=order(style), headers=auth(key))
    assert r.status_code == 200, r.text
    order_id: str = r.json()["order_id"]
    return order_id


async def test_requests_are_counted_by_route_template_and_status(settings: Settings) -> None:
    async with serving(settings) as (state, base), httpx.AsyncClient(base_url=base) as client:
        _, key = await new_account(state, "standard")
        before = await scrape(client)
        for _ in range(2):
            assert (await client.get("/healthz")).status_code == 200
        for suffix in ("AAAAAAAAAA", "BBBBBBBBBB", "CCCCCCCCCC"):
            r = await client.get(f"/api/v1/status/ORD-20260101-{suffix}", headers=auth(key))
            assert r.status_code == 404
        assert (await client.get("/no/such/ORD-20260101-DDDDDDDDDD")).status_code == 404
        assert (await client.post("/api/v1/generate", json=order())).status_code == 401
        after = await scrape(client)

    def delta(**labels: str) -> float:
        return after.value(REQUESTS, **labels) - before.value(REQUESTS, **labels)

    assert delta(method="GET", route="/healthz", status="200") == 2
    assert delta(method="GET", route="/api/v1/status/{order_id}", status="404") == 3
    assert delta(method="GET", route="unmatched", status="404") == 1
    assert delta(method="POST", route="/api/v1/generate", status="401") == 1
    assert delta(method="GET", route="/metrics", status="200") == 1  # the first scrape
    routes = {labels["route"] for labels in after.labelsets(REQUESTS)}
    assert not [r for r in routes if "ORD-" in r], routes  # templates, never raw paths
    duration = "easel_http_request_duration_seconds_count"
    assert after.value(duration, route="/healthz") - before.value(duration, route="/healthz") == 2


async def test_queue_depth_by_priority_and_model_and_submit_latency(settings: Settings) -> None:
    async with serving(settings) as (state, base), httpx.AsyncClient(base_url=base) as client:
        _, standard = await new_account(state, "standard")  # priority 2
        _, pro = await new_account(state, "pro")  # priority 3
        before = await scrape(client)
        assert before.value("easel_queue_depth") == 0
        for key, style in ((standard, "general"), (standard, "general"), (standard, "anime")):
            await submit(client, key, style)
        await submit(client, pro, "general")
        # Four images are more than the standard plan allows: refused while placing.
        r = await client.post(
            "/api/v1/generate", json=order(product_type="batch_4"), headers=auth(standard)
        )
        assert r.status_code == 403, r.text
        after = await scrape(client)

    depth = {
        (s.labels["priority"], s.labels["model"]): s.value
        for s in after.samples
        if s.name == "easel_queue_depth"
    }
    assert depth == {("2", "sdxl-general"): 2, ("2", "sdxl-anime"): 1, ("3", "sdxl-general"): 1}
    assert 0 <= after.value("easel_queue_oldest_age_seconds", priority="2") < 120
    assert after.value("easel_orders_running") == 0
    assert after.value("easel_database_up") == 1
    submit_count = "easel_submit_duration_seconds_count"

    def submits(outcome: str) -> float:
        labels = {"dialect": "native", "outcome": outcome}
        return after.value(submit_count, **labels) - before.value(submit_count, **labels)

    assert submits("placed") == 4
    assert submits("refused") == 1


async def test_workers_are_read_from_the_workers_table(settings: Settings) -> None:
    now = utcnow()
    beat = settings.worker_heartbeat_seconds
    async with app_client(settings) as (client, state):
        rows = [("w-online", now, False), ("w-silent", now - timedelta(seconds=10 * beat), False)]
        rows.append(("w-stopped", now, True))
        for worker_id, seen, stopped in rows:
            async with state.db.transaction() as session:
                me = presence.Presence(worker_id, "gpu-host", "cuda:0", None, now)
                await presence.report(session, me, [], 0, seen, stopped=stopped)
        scraped = await scrape(client)
    assert scraped.value("easel_workers", state="online") == 1
    assert scraped.value("easel_workers", state="offline") == 1
    assert scraped.value("easel_workers", state="stopped") == 1
    beats = {
        s.labels["worker_id"]: s.value
        for s in scraped.samples
        if s.name == "easel_worker_last_heartbeat_timestamp_seconds"
    }
    assert beats.keys() == {"w-online", "w-silent"}  # a worker that stopped is not missed
    assert beats["w-online"] == pytest.approx(now.timestamp(), abs=1)


async def test_a_canceled_order_counts_its_final_status_and_refund(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        order_id = await submit(client, key)
        before = await scrape(client)
        r = await client.post(f"/api/v1/orders/{order_id}/cancel", headers=auth(key))
        assert r.status_code == 200, r.text
        # Canceling it again changes nothing and counts nothing.
        again = await client.post(f"/api/v1/orders/{order_id}/cancel", headers=auth(key))
        assert again.status_code == 409
        after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    finished = {"status": "canceled", "model": "sdxl-general", "code": "canceled"}
    assert delta("easel_orders_finished_total", **finished) == 1
    assert delta("easel_orders_finished_total") == 1
    assert delta("easel_refunds_total", status="canceled") == 1
    assert delta("easel_refunded_credits_total", status="canceled") == 1  # one image, one credit
    assert after.value("easel_queue_depth") == 0


async def test_webhook_attempts_by_result(settings: Settings) -> None:
    """Two deliveries to a receiver that refuses three times, two attempts each at most: a
    retry and a give-up for the first, a retry and a delivery for the second."""
    settings = settings.model_copy(update={"webhook_max_attempts": 2})
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        with webhook_receiver(refuse_first=3) as hooks:
            before = await scrape(client)
            for _ in range(2):
                body = order(webhook_url=hooks.url)
                r = await client.post("/api/v1/generate", json=body, headers=auth(key))
                order_id = r.json()["order_id"]
                r = await client.post(f"/api/v1/orders/{order_id}/cancel", headers=auth(key))
                assert r.status_code == 200, r.text
            queued = await scrape(client)
            assert queued.value("easel_webhook_deliveries_pending") == 2
            assert queued.value("easel_webhook_deliveries_due") == 2
            async with httpx.AsyncClient() as http:
                for _ in range(50):
                    await deliver_due(state.db, http, state.settings, state.storage)
                    if len(hooks.refused) + len(hooks.calls) >= 4:
                        break
                    await asyncio.sleep(0.06)
            after = await scrape(client)
    assert (len(hooks.refused), len(hooks.calls)) == (3, 1)

    def attempts(result: str) -> float:
        name = "easel_webhook_attempts_total"
        return after.value(name, result=result) - before.value(name, result=result)

    assert (attempts("retry"), attempts("given_up"), attempts("delivered")) == (2, 1, 1)
    assert after.value("easel_webhook_deliveries_pending") == 0


async def test_metrics_need_no_api_key_and_a_token_when_one_is_set(settings: Settings) -> None:
    async with app_client(settings) as (client, _):
        assert (await client.get("/metrics")).status_code == 200
    guarded = settings.model_copy(update={"metrics_token": "s3cret-token"})
    async with app_client(guarded) as (client, state):
        _, key = await new_account(state, "standard")
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers=auth(key))).status_code == 401
        assert (await client.get("/metrics", headers=auth("s3cret-tokeX"))).status_code == 401
        latin = {"Authorization": "Bearer s3cr\u00e9t".encode("latin-1")}
        assert (await client.get("/metrics", headers=latin)).status_code == 401  # not a 500
        scraped = await scrape(client, authorization="Bearer s3cret-token")
        assert scraped.value("easel_database_up") == 1
    off = settings.model_copy(update={"metrics": False})
    async with app_client(off) as (client, _):
        assert (await client.get("/metrics")).status_code == 404


async def test_a_database_that_does_not_answer_leaves_the_rest_of_the_metrics(
    tmp_path: Path,
) -> None:
    """Port 1 refuses connections: the scrape says so in easel_database_up, and still answers."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url="postgresql+asyncpg://easel@127.0.0.1:1/easel",
        secret_key="test-secret-key",
        rate_limits=False,
    )
    async with app_client(settings) as (client, _):
        assert (await client.get("/api/v1/plans")).status_code == 200  # the catalog's
        scraped: Scrape = await scrape(client)
    assert scraped.value("easel_database_up") == 0
    assert scraped.value("easel_queue_depth") == 0
    assert scraped.value(REQUESTS, route="/api/v1/plans", status="200") >= 1
