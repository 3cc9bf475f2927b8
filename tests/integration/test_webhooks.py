"""Webhooks: signed (Standard Webhooks), retried until the receiver comes back, logged,
redeliverable, and never sent to a forbidden address."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from easel.api.state import AppState
from easel.config import Settings
from easel.db.tables import WebhookDelivery
from easel.services.webhook_sender import deliver_due
from tests.support.app import app_client, auth, new_account
from tests.support.receiver import Receiver, webhook_receiver

pytestmark = pytest.mark.anyio

BODY = {"style": "general", "prompt": "a quiet harbour", "width": 512, "height": 512}


async def submit_and_cancel(client: httpx.AsyncClient, key: str, url: str) -> str:
    """An order whose cancel (a status change) writes one outbox row."""
    r = await client.post("/api/v1/generate", json=BODY | {"webhook_url": url}, headers=auth(key))
    assert r.status_code == 200, r.text
    order_id: str = r.json()["order_id"]
    cancel = await client.post(f"/api/v1/orders/{order_id}/cancel", headers=auth(key))
    assert cancel.json()["status"] == "canceled"
    return order_id


async def send_until(state: AppState, hooks: Receiver, count: int, passes: int = 50) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(passes):
            await deliver_due(state.db, http, state.settings, state.storage)
            if len(hooks.calls) >= count:
                return
            await hooks_pause()
    raise AssertionError(f"{len(hooks.calls)} deliveries, expected {count}")


async def hooks_pause() -> None:
    await asyncio.sleep(0.06)


async def test_deliveries_are_signed_per_account(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        secret = (await client.get("/api/v1/account", headers=auth(key))).json()["webhook_secret"]
        assert secret.startswith("whsec_")
        with webhook_receiver() as hooks:
            order_id = await submit_and_cancel(client, key, hooks.url)
            await send_until(state, hooks, 1)
        call = hooks.calls[0]
        payload = Webhook(secret).verify(call.raw, call.headers)
        assert payload == {
            "order_id": order_id,
            "status": "canceled",
            "output_urls": [],
            "error": {"code": "canceled", "message": "canceled by the client"},
        }
        assert call.headers["webhook-id"].startswith("msg_")
        with pytest.raises(Exception, match="signature"):
            Webhook("whsec_" + "A" * 32).verify(call.raw, call.headers)


async def test_receiver_down_then_up_gets_it_and_the_log_shows_it(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        with webhook_receiver(refuse_first=3) as hooks:
            order_id = await submit_and_cancel(client, key, hooks.url)
            await send_until(state, hooks, 1)
        log = (await client.get("/api/v1/webhooks/deliveries", headers=auth(key))).json()
        [delivery] = log["deliveries"]
        assert delivery["order_id"] == order_id
        assert delivery["event"] == "order.canceled"
        assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == (
            "delivered",
            4,
            200,
        )
        assert delivery["url"] == hooks.url

        # Manual redelivery: the same webhook-id again.
        with webhook_receiver() as again:
            async with state.db.transaction() as s:
                row = await s.get(WebhookDelivery, delivery["id"])
                assert row is not None
                row.url = again.url
            r = await client.post(
                f"/api/v1/webhooks/deliveries/{delivery['id']}/redeliver", headers=auth(key)
            )
            assert r.json()["delivery"]["state"] == "pending"
            await send_until(state, again, 1)
        assert again.calls[0].headers["webhook-id"] == delivery["id"]
        _, other = await new_account(state, "standard")
        r = await client.post(
            f"/api/v1/webhooks/deliveries/{delivery['id']}/redeliver", headers=auth(other)
        )
        assert r.status_code == 404


async def test_gives_up_after_the_last_attempt(settings: Settings) -> None:
    settings = settings.model_copy(update={"webhook_max_attempts": 3})
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        with webhook_receiver(refuse_first=100) as hooks:
            await submit_and_cancel(client, key, hooks.url)
            async with httpx.AsyncClient() as http:
                for _ in range(20):
                    await deliver_due(state.db, http, state.settings, state.storage)
                    await hooks_pause()
        [delivery] = (await client.get("/api/v1/webhooks/deliveries", headers=auth(key))).json()[
            "deliveries"
        ]
        assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == (
            "failed",
            3,
            503,
        )


async def test_private_addresses_refused_at_submit(settings: Settings) -> None:
    settings = settings.model_copy(update={"allowed_networks": []})
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        for url in ("http://127.0.0.1:9/hook", "http://169.254.169.254/latest", "http://[::1]/"):
            r = await client.post(
                "/api/v1/generate", json=BODY | {"webhook_url": url}, headers=auth(key)
            )
            assert r.status_code == 422, url
            assert "private, loopback" in r.json()["error"]["message"]
        # A host that does not resolve now is accepted (seed 000's own example).
        r = await client.post(
            "/api/v1/generate",
            json=BODY | {"webhook_url": "https://your-app.com/callback"},
            headers=auth(key),
        )
        assert r.status_code == 200


async def test_checked_again_at_delivery_and_on_redirect(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        with (
            webhook_receiver(redirect_to="http://169.254.169.254/latest/meta-data") as hooks,
        ):
            await submit_and_cancel(client, key, hooks.url)
            async with httpx.AsyncClient() as http:
                await deliver_due(state.db, http, state.settings, state.storage)
        [d] = (await client.get("/api/v1/webhooks/deliveries", headers=auth(key))).json()[
            "deliveries"
        ]
        assert "169.254.169.254" in d["last_error"] and d["state"] == "pending"

        # Allowed at submit, forbidden by the time it is delivered: nothing is sent.
        with webhook_receiver() as hooks:
            order_id = await submit_and_cancel(client, key, hooks.url)
            state.settings = state.settings.model_copy(update={"allowed_networks": []})
            async with httpx.AsyncClient() as http:
                await deliver_due(state.db, http, state.settings, state.storage)
            assert hooks.calls == []
        log = (
            await client.get(f"/api/v1/webhooks/deliveries?order_id={order_id}", headers=auth(key))
        ).json()["deliveries"]
        assert "127.0.0.1" in log[0]["last_error"]
