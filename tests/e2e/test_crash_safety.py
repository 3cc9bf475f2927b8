"""Crash safety with real processes: kill workers, the API and the sender; nothing accepted is
lost or charged twice."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import httpx
import pytest

from easel.config import Settings
from easel.db.tables import Order
from tests.support.audit import audit_account
from tests.support.catalogs import tiny_catalog
from tests.support.processes import cluster, make_account, run_db, wait_order
from tests.support.receiver import webhook_receiver

pytestmark = pytest.mark.slow

FAST_LEASES = {
    "EASEL_LEASE_SECONDS": "1.5",
    "EASEL_REAPER_INTERVAL": "0.3",
    "EASEL_PROGRESS_INTERVAL": "0.1",
}
SMALL = {"style": "general", "prompt": "a lantern", "width": 256, "height": 256}
MEGA_CREDITS = 2000
# Orders in the soak; CI runs 80 on each database (about 100 s each), a longer soak takes 200.
SOAK_ORDERS = int(os.environ.get("EASEL_SOAK_ORDERS", "80"))


def with_tiny(settings: Settings, tmp_path: Path, model: Path) -> Settings:
    return settings.model_copy(update={"catalog": tiny_catalog(tmp_path / "catalog.toml", model)})


def test_worker_killed_mid_generation_completes_once_elsewhere(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    settings = with_tiny(settings, tmp_path, tiny_sdxl)
    account_id, key = make_account(settings)
    with cluster(settings, tmp_path, **FAST_LEASES) as c:
        client = httpx.Client(base_url=c.api(), headers={"X-API-Key": key}, timeout=30)
        c.worker("w1")
        body = SMALL | {"width": 512, "height": 512, "steps": 30}
        order_id = client.post("/api/v1/generate", json=body).json()["order_id"]
        wait_order(client, order_id, ("running",), step=1)
        c.kill("w1")
        c.worker("w2")
        done = wait_order(client, order_id, ("completed", "failed"))
        client.close()
    assert done["status"] == "completed", done
    assert done["attempts"] == 2

    async def worker_of(session):  # type: ignore[no-untyped-def]
        order = await session.get(Order, order_id)
        return order.worker_id

    assert run_db(settings, worker_of) == "w2"
    audit = run_db(settings, lambda s: audit_account(s, account_id, MEGA_CREDITS))
    assert audit.problems == []
    assert audit.balance == audit.expected_balance == MEGA_CREDITS - 1


def test_api_killed_and_restarted_loses_no_accepted_order(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    settings = with_tiny(settings, tmp_path, tiny_sdxl)
    account_id, key = make_account(settings)
    with cluster(settings, tmp_path) as c:
        base = c.api("api1")
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as client:
            accepted = [
                client.post("/api/v1/generate", json=SMALL).json()["order_id"] for _ in range(5)
            ]
        c.kill("api1")
        base = c.api("api2")
        c.worker("w1")
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as client:
            ends = [wait_order(client, oid, ("completed", "failed"))["status"] for oid in accepted]
    assert ends == ["completed"] * 5
    audit = run_db(settings, lambda s: audit_account(s, account_id, MEGA_CREDITS))
    assert audit.problems == []
    assert audit.balance == MEGA_CREDITS - 5


def test_sender_killed_mid_delivery_delivers_later_with_the_same_id(
    settings: Settings, tmp_path: Path
) -> None:
    _, key = make_account(settings)
    with (
        webhook_receiver(delay=2.0) as hooks,
        # An attempt may take 3 s, so the receiver's 2 s hold is answered; the killed sender's
        # lease (2 x 3 s + 3 s) then runs out and the second sender takes the delivery.
        cluster(settings, tmp_path, EASEL_WEBHOOK_TIMEOUT="3", EASEL_WEBHOOK_LEASE_MARGIN="3") as c,
    ):
        base = c.api(services=False)
        client = httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30)
        order_id = client.post("/api/v1/generate", json=SMALL | {"webhook_url": hooks.url}).json()[
            "order_id"
        ]
        client.post(f"/api/v1/orders/{order_id}/cancel")
        c.services("s1")  # the webhook sender's process
        deadline = time.monotonic() + 60
        while not hooks.receiving and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hooks.receiving, c.log("s1")
        c.kill("s1")  # while the receiver still holds the request
        c.services("s2")
        calls = hooks.wait_for(2, timeout=90)
        deadline = time.monotonic() + 30  # the receiver holds the second call 2 s too
        while time.monotonic() < deadline:
            log = client.get(f"/api/v1/webhooks/deliveries?order_id={order_id}").json()
            if log["deliveries"][0]["state"] == "delivered":
                break
            time.sleep(0.2)
        client.close()
    assert calls[0].headers["webhook-id"] == calls[1].headers["webhook-id"]
    assert calls[0].body == calls[1].body
    assert log["deliveries"][0]["state"] == "delivered"


def test_soak_random_worker_kills(settings: Settings, tmp_path: Path, tiny_sdxl: Path) -> None:
    """SOAK_ORDERS orders, 3 worker processes, a worker killed every few seconds."""
    settings = with_tiny(settings, tmp_path, tiny_sdxl)
    account_id, key = make_account(settings)
    rng = random.Random(7)
    with cluster(settings, tmp_path, **FAST_LEASES) as c:
        client = httpx.Client(base_url=c.api(), headers={"X-API-Key": key}, timeout=30)
        ids = [
            client.post("/api/v1/generate", json=SMALL).json()["order_id"]
            for _ in range(SOAK_ORDERS)
        ]
        alive = [f"w{i}" for i in range(3)]
        for name in alive:
            c.worker(name)
        spawned = 3
        kills = 0
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            pending = client.get("/api/v1/orders?limit=1&status=pending").json()["orders"]
            running = client.get("/api/v1/orders?limit=1&status=running").json()["orders"]
            if not pending and not running:
                break
            time.sleep(rng.uniform(2.0, 4.0))
            victim = alive.pop(rng.randrange(len(alive)))
            c.kill(victim)
            kills += 1
            name = f"w{spawned}"
            spawned += 1
            c.worker(name)
            alive.append(name)
        client.close()
    audit = run_db(settings, lambda s: audit_account(s, account_id, MEGA_CREDITS))
    assert kills >= 3
    assert sorted(set(audit.statuses)) == sorted(ids)
    assert audit.problems == []
    assert audit.balance == audit.expected_balance
    completed = sum(1 for s in audit.statuses.values() if s == "completed")
    print(
        f"soak: {completed} completed, {SOAK_ORDERS - completed} failed and refunded, {kills} kills"
    )
