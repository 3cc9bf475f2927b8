"""Upstream channels as the operator sees them: the circuit breaker (a channel that fails
`failures_to_cool` times in a row rests for the longer of cool_seconds and Retry-After, orders go
to the next channel meanwhile, then one probe goes through), GET /api/v1/admin/channels and the
admin order view, routes hidden from clients unless EASEL_EXPOSE_ROUTE; and 200 orders with 16 in
flight, none submitted twice. Real loopback providers (tests/support/providers.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.tables import Account, OrderAttempt
from easel.orders.request import build_request
from easel.orders.submit import submit
from tests.support import providers
from tests.support.app import app_client, auth, new_account
from tests.support.catalogs import tiny_catalog
from tests.support.generation import wait_orders
from tests.support.worker import running_worker

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

KEY_ENV = "EASEL_TEST_PROVIDER_KEY"
RETRY_AFTER = 3.0  # the flaky channel's Retry-After: longer than its cool_seconds (0.2)


def upstream_settings(settings: Settings, tmp_path: Path, extra: str, **update: Any) -> Settings:
    catalog = tiny_catalog(tmp_path / "catalog.toml", "unused", steps=2, side=256, extra=extra)
    return settings.model_copy(update={"catalog": catalog, "lease_seconds": 5.0, **update})


async def place(state: AppState, account: Account, model_id: str, prompt: str) -> str:
    model = state.catalog.resolve(model_id)
    assert model is not None
    req = build_request(
        state.settings,
        dialect="native",
        model=model,
        model_alias=model_id,
        product=state.catalog.products["static_image"],
        prompt=prompt,
        width=256,
        height=256,
        n=1,
        seed=7,
    )
    async with state.db.transaction() as session:
        order, _ = await submit(session, state.catalog, account, req, utcnow())
    return order.id


async def tries(state: AppState, order_id: str) -> list[tuple[str, str]]:
    async with state.db.transaction(readonly=True) as session:
        rows = await session.scalars(
            select(OrderAttempt)
            .where(OrderAttempt.order_id == order_id)
            .order_by(OrderAttempt.number)
        )
        return [(a.channel, a.state) for a in rows]


async def make_admin(state: AppState, account: Account) -> None:
    async with state.db.transaction() as session:
        row = await session.get(Account, account.id)
        assert row is not None
        row.is_admin = True


async def channel_views(client: httpx.AsyncClient, key: str) -> dict[str, dict[str, Any]]:
    response = await client.get("/api/v1/admin/channels", headers=auth(key))
    assert response.status_code == 200, response.text
    return {c["channel"]: c for c in response.json()["channels"]}


async def test_breaker_cools_a_failing_channel_then_lets_one_probe_through(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, providers.KEY)
    with (
        providers.provider(
            "openai", job_seconds=0.05, script=[503, 503], retry_after=f"{RETRY_AFTER:g}"
        ) as flaky,
        providers.provider("openai", job_seconds=0.05) as steady,
    ):
        extra = providers.upstream_model(
            "up-b",
            providers.channel_table(
                "up-b",
                "openai",
                f"{flaky.url}/v1",
                "m1",
                priority=1,
                name="flaky",
                failures_to_cool=2,
                cool_seconds=0.2,
                retries=0,
            ),
            providers.channel_table(
                "up-b", "openai", f"{steady.url}/v1", "m2", priority=2, name="steady"
            ),
        )
        async with app_client(upstream_settings(settings, tmp_path, extra)) as (client, state):
            account, key = await new_account(state, "mega")
            admin, admin_key = await new_account(state, "mega")
            await make_admin(state, admin)
            async with running_worker(state, models=["up-b"]):
                # Two failures in a row: the 503s, each with Retry-After 3.
                for i in range(2):
                    order_id = await place(state, account, "up-b", f"failing {i}")
                    [order] = await wait_orders(state, [order_id], timeout=30)
                    assert order.status == "completed", order.error_message
                    assert await tries(state, order_id) == [
                        ("flaky", "refused"),
                        ("steady", "succeeded"),
                    ]
                cooled = time.monotonic()

                views = await channel_views(client, admin_key)
                assert views["flaky"]["state"] == "cooling", views["flaky"]
                assert views["flaky"]["cooling_until"] is not None
                assert views["flaky"]["last_hour"]["attempts"] == 2
                assert views["flaky"]["last_hour"]["success_rate"] == 0.0
                assert views["steady"]["state"] == "ok"
                assert views["steady"]["last_hour"]["success_rate"] == 1.0
                assert views["steady"]["last_day"]["cost_per_image"] == pytest.approx(0.04)
                assert views["steady"]["last_hour"]["latency_ms_p50"] is not None
                assert views["steady"]["in_flight"] == 0

                # Past cool_seconds (0.2 s) but within Retry-After: flaky is not even tried.
                await asyncio.sleep(0.5)
                order_id = await place(state, account, "up-b", "while cooling")
                [order] = await wait_orders(state, [order_id], timeout=30)
                assert time.monotonic() - cooled < RETRY_AFTER, "too slow to check the cooling"
                assert await tries(state, order_id) == [("steady", "succeeded")]
                assert flaky.refused == 2 and flaky.submits == 0

                # After Retry-After: one probe goes to flaky (slow now); the others to steady.
                await asyncio.sleep(max(0.0, cooled + RETRY_AFTER + 0.3 - time.monotonic()))
                flaky.job_seconds = 1.0
                after = [
                    await place(state, account, "up-b", f"after the cool-down {i}")
                    for i in range(3)
                ]
                done = await wait_orders(state, after, timeout=30)
                assert all(o.status == "completed" for o in done)
                routes = [await tries(state, o) for o in after]
                probes = [r for r in routes if r == [("flaky", "succeeded")]]
                assert len(probes) == 1, routes
                assert flaky.submits == 1
                views = await channel_views(client, admin_key)
                assert views["flaky"]["state"] == "ok", views["flaky"]
                assert views["flaky"]["workers"][0]["failures_in_a_row"] == 0

            # The operator's views name the route; the client's does not.
            probe_order = after[routes.index(probes[0])]
            mine = await client.get(f"/api/v1/status/{probe_order}", headers=auth(key))
            assert mine.status_code == 200 and "route" not in mine.json()
            assert "flaky" not in mine.text
            seen = await client.get(f"/api/v1/admin/orders/{probe_order}", headers=auth(admin_key))
            assert seen.status_code == 200, seen.text
            route = seen.json()["route"]
            assert (route["channel"], route["provider"]) == ("flaky", "openai")
            assert route["attempts"][0]["latency_ms"] is not None
            assert route["cost"] == pytest.approx(0.04)
            assert seen.json()["account_id"] == account.id
            listed = await client.get("/api/v1/orders", headers=auth(key))
            assert all("route" not in o for o in listed.json()["orders"])

            # Everyone but an admin: the 404 of a path that does not exist.
            missing = await client.get("/api/v1/admin/nothing-here", headers=auth(key))
            for headers in (auth(key), auth("sk-unknown"), {}):
                for path in ("/api/v1/admin/channels", f"/api/v1/admin/orders/{probe_order}"):
                    response = await client.get(path, headers=headers)
                    assert response.status_code == 404
                    assert response.json() == missing.json()

        # EASEL_EXPOSE_ROUTE: the client sees channel, provider and states, never ids or costs.
        exposed = upstream_settings(settings, tmp_path, extra, expose_route=True)
        async with app_client(exposed) as (client, state):
            body = (await client.get(f"/api/v1/status/{probe_order}", headers=auth(key))).json()
            assert body["route"] == {
                "channel": "flaky",
                "provider": "openai",
                "attempts": [
                    {"number": 1, "channel": "flaky", "provider": "openai", "state": "succeeded"}
                ],
            }


async def test_two_hundred_orders_sixteen_in_flight(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, providers.KEY)
    # The provider answers in 1-3 s; 0.1-0.3 s keeps this test fast on a 2-core CI
    # machine while 16 jobs still overlap at the provider all the time.
    with providers.provider("fal", job_seconds=0.1, job_seconds_max=0.3) as fake:
        extra = (
            providers.upstream_model(
                "up-200",
                providers.channel_table("up-200", "fal", fake.url, "fal-ai/x", max_in_flight=16),
            )
            + "[plans.mega]\nmax_running = 64\n"
        )
        state = AppState.build(upstream_settings(settings, tmp_path, extra))
        try:
            accounts = [(await new_account(state, "mega"))[0] for _ in range(2)]
            order_ids = [
                await place(state, accounts[i % 2], "up-200", f"order {i}") for i in range(200)
            ]
            async with running_worker(state, models=["up-200"]):
                orders = await wait_orders(state, order_ids, timeout=180)
            failed = [(o.id, o.error_message) for o in orders if o.status != "completed"]
            assert not failed, failed[:3]
            assert fake.submits == 200
            assert set(fake.prompts) == {f"order {i}" for i in range(200)}
            assert max(fake.prompts.values()) == 1  # none submitted twice
            assert fake.peak_open <= 16, fake.peak_open
            assert fake.peak_open >= 8  # the orders did overlap
        finally:
            await state.db.dispose()
