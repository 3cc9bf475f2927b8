"""Webhook delivery isolation (issue 20), against real loopback endpoints and the real database
(SQLite and PostgreSQL): one customer's hanging endpoint never delays another's callbacks; a
failing endpoint backs off as a whole (one probe at a time), is disabled after the configured
span (the sender's clock moved), and once re-enabled gets its backlog in order with the original
webhook-ids; the timeouts and the response-size limit end an attempt."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.tables import WebhookDelivery, WebhookEndpoint
from easel.orders import lifecycle, queue
from easel.webhooks import claim
from tests.support.app import app_client, auth, new_account
from tests.support.endpoints import Endpoint, loopback_endpoints, until
from tests.support.orders import submit_order
from tests.support.webhooks import due_deliveries, sending

pytestmark = pytest.mark.anyio


async def complete_order(state: AppState, order_id: str) -> None:
    """Claimed by a worker and completed, as the worker does (no outputs)."""
    async with state.db.transaction() as session:
        claimed = await queue.claim_next(session, "w-test", utcnow(), timedelta(minutes=1))
        assert claimed is not None and claimed.id == order_id
    async with state.db.transaction() as session:
        assert await lifecycle.complete(session, order_id, "w-test", [], utcnow()) is not None


async def test_a_hanging_endpoint_does_not_delay_another_accounts_callbacks(
    settings: Settings,
) -> None:
    settings = settings.model_copy(
        update={"webhook_timeout": 2.0, "webhook_first_byte_timeout": 1.0}
    )
    async with app_client(settings) as (client, state):
        slow, _ = await new_account(state, "standard")
        other, other_key = await new_account(state, "standard")
        with loopback_endpoints() as endpoints:
            hanging = endpoints.add("hang")
            healthy = endpoints.add("ok")
            await due_deliveries(state, slow, hanging.url, 200)
            order_id = await submit_order(state, other, webhook_url=healthy.url)
            async with sending(state, settings):
                await until(lambda: hanging.active == 4, 10, "the hanging endpoint holding 4")
                await complete_order(state, order_id)
                completed = time.monotonic()
                await until(lambda: bool(healthy.accepted), 5, "the other account's callback")
                arrived = healthy.arrivals[0]
                await until(lambda: len(hanging.received) > 8, 10, "a second round of hangs")
            assert hanging.max_active == settings.webhook_max_per_endpoint == 4
        assert arrived - completed < 2.0, f"{arrived - completed:.2f} s after completion"
        log = (await client.get("/api/v1/webhooks/deliveries", headers=auth(other_key))).json()
        [delivery] = log["deliveries"]
        assert delivery["state"] == "delivered" and delivery["latency_ms"] < 2000
        assert delivery["last_duration_ms"] is not None
        async with state.db.transaction(readonly=True) as session:
            errors = set(
                await session.scalars(
                    select(WebhookDelivery.last_error).where(
                        WebhookDelivery.account_id == slow.id, WebhookDelivery.attempts > 0
                    )
                )
            )
        assert errors == {"no answer within 1 s of sending (EASEL_WEBHOOK_FIRST_BYTE_TIMEOUT)"}


async def test_a_failing_endpoint_is_probed_then_disabled_then_reenabled(
    settings: Settings,
) -> None:
    settings = settings.model_copy(
        update={
            "webhook_retry_first": 0.3,
            "webhook_retry_factor": 1.0,
            "webhook_endpoint_retry_max": 0.3,
            "webhook_max_attempts": 100,
            "webhook_poll_interval": 0.05,
        }
    )
    moved = [timedelta(0)]

    def clock() -> datetime:
        return utcnow() + moved[0]

    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "standard")
        with loopback_endpoints() as endpoints:
            failing = endpoints.add("fail", delay=0.05)
            ids = await due_deliveries(state, account, failing.url, 12)

            async def endpoint() -> dict[str, Any]:
                r = await client.get("/api/v1/webhooks/endpoints", headers=auth(key))
                assert r.status_code == 200, r.text
                [found] = r.json()["endpoints"]
                return dict(found)

            async with sending(state, settings, clock):
                # Healthy at first: up to four at once; after five failures in a row it backs
                # off as a whole and is probed with one delivery at a time.
                seen: dict[str, Any] = {}

                async def backing_off() -> bool:
                    seen.update(await endpoint())
                    return bool(seen["consecutive_failures"] >= 5 and failing.active == 0)

                deadline = time.monotonic() + 10
                while not await backing_off():
                    assert time.monotonic() < deadline, seen
                    await asyncio.sleep(0.02)
                assert failing.max_active == 4
                before = len(failing.received)
                await asyncio.sleep(1.5)
                probes = failing.alone[before:]
                assert 2 <= len(probes) <= 7, probes  # about one per 0.3 s, not 4 at a time
                assert all(probes), "a probe was sent beside another request"
                async with state.db.transaction(readonly=True) as session:
                    attempts = await session.scalars(
                        select(WebhookDelivery.attempts).where(
                            WebhookDelivery.account_id == account.id
                        )
                    )
                    assert sum(attempts) == len(failing.received)  # no attempt unaccounted

                # Failing for the configured span (5 days): disabled; nothing more is sent.
                moved[0] = timedelta(days=settings.webhook_disable_after_days, minutes=1)
                await until(lambda: failing.active == 0, 5, "the probe in flight")
                deadline = time.monotonic() + 10
                while (state_now := await endpoint())["state"] != "disabled":
                    assert time.monotonic() < deadline, state_now
                    await asyncio.sleep(0.05)
                sent = len(failing.received)
                await asyncio.sleep(0.8)
                assert len(failing.received) == sent
            assert (
                state_now["disabled_at"]
                and "HTTP 500: receiver broke" in (state_now["disabled_reason"])
            )
            account_body = (await client.get("/api/v1/account", headers=auth(key))).json()
            [disabled] = account_body["webhook_endpoints_disabled"]
            assert (
                disabled["id"] == state_now["id"]
                and disabled["url"] == failing.url.rsplit("/", 1)[0]
            )
            log = (await client.get("/api/v1/webhooks/deliveries", headers=auth(key))).json()
            assert {d["endpoint_state"] for d in log["deliveries"]} == {"disabled"}
            assert {d["next_attempt_at"] for d in log["deliveries"]} == {None}
            refused = await client.post(
                f"/api/v1/webhooks/deliveries/{ids[0]}/redeliver", headers=auth(key)
            )
            assert refused.status_code == 409 and "/enable" in refused.json()["error"]["message"]

            # Re-enabled: the backlog arrives, oldest first, each with its original webhook-id.
            failing.mode = "ok"
            r = await client.post(
                f"/api/v1/webhooks/endpoints/{state_now['id']}/enable", headers=auth(key)
            )
            assert r.status_code == 200, r.text
            assert r.json()["resent"] == 12 and r.json()["endpoint"]["state"] == "active"
            one_at_a_time = settings.model_copy(update={"webhook_max_per_endpoint": 1})
            async with sending(state, one_at_a_time, clock):
                await until(lambda: len(failing.accepted) == 12, 10, "the backlog")
            assert failing.accepted == ids
            assert set(failing.received) == set(ids)  # the same ids as the failed attempts
        assert (await client.get("/api/v1/account", headers=auth(key))).json()[
            "webhook_endpoints_disabled"
        ] == []
        _, stranger = await new_account(state, "standard")
        r = await client.post(
            f"/api/v1/webhooks/endpoints/{state_now['id']}/enable", headers=auth(stranger)
        )
        assert r.status_code == 404


async def test_an_endless_answer_is_read_only_so_far(settings: Settings) -> None:
    settings = settings.model_copy(update={"webhook_timeout": 5.0})
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "standard")
        with loopback_endpoints() as endpoints:
            flood: Endpoint = endpoints.add("flood")
            await due_deliveries(state, account, flood.url, 1)
            started = time.monotonic()
            async with sending(state, settings):
                await until(lambda: bool(flood.received), 5, "the delivery")
                deadline = time.monotonic() + 4
                while True:
                    log = (
                        await client.get("/api/v1/webhooks/deliveries", headers=auth(key))
                    ).json()["deliveries"]
                    if log[0]["state"] == "delivered" or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.02)
            assert log[0]["state"] == "delivered" and log[0]["last_status"] == 200
            assert time.monotonic() - started < 3  # not held until EASEL_WEBHOOK_TIMEOUT


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_releasing_expired_leases_locks_the_endpoint_before_its_deliveries(
    settings: Settings,
) -> None:
    """`record` locks an endpoint, then its deliveries; releasing a dead sender's leases must
    take them in the same order, or the two deadlock. While a recording holds the endpoint, the
    release waits without having touched the delivery."""
    async with app_client(settings) as (_, state):
        account, _ = await new_account(state, "standard")
        with loopback_endpoints() as endpoints:
            [delivery_id] = await due_deliveries(state, account, endpoints.add("ok").url, 1)
        async with state.db.transaction() as session:
            [due] = await claim.claim_due(session, settings, 4, utcnow())
        assert due.id == delivery_id
        expired = due.lease_until + timedelta(seconds=1)
        async with state.db.transaction() as recording:
            await recording.execute(
                select(WebhookEndpoint.id)
                .where(WebhookEndpoint.id == due.endpoint_id)
                .with_for_update()
            )

            async def release() -> int:
                async with state.db.transaction() as session:
                    return await claim.release_expired(session, expired)

            releasing = asyncio.create_task(release())
            await asyncio.sleep(0.5)
            assert not releasing.done()  # waiting for the endpoint ...
            async with state.db.transaction() as other:  # ... with the delivery still free
                locked = await other.scalar(
                    select(WebhookDelivery.id)
                    .where(WebhookDelivery.id == delivery_id)
                    .with_for_update(nowait=True)
                )
            assert locked == delivery_id
        assert await asyncio.wait_for(releasing, 10) == 1
