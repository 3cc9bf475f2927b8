"""Seed 000's native API, in-process over ASGI, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from easel.accounts.keys import revoke_key
from easel.config import Settings
from easel.db.tables import Order
from tests.support.app import app_client, auth, new_account
from tests.support.audit import nothing_happened
from tests.support.seeds import SEED_000_BODY

pytestmark = pytest.mark.anyio


async def test_seed_000_example_verbatim(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "pro")
        r = await client.post("/api/v1/generate", json=SEED_000_BODY, headers=auth(key))
        assert r.status_code == 200, r.text
        body = r.json()
        assert re.fullmatch(r"ORD-\d{8}-[A-Z0-9]{10}", body["order_id"])
        assert body | {"order_id": "x", "cost": 0} == {
            "ok": True,
            "order_id": "x",
            "status": "pending",
            "product_type": "static_image",
            "style": "guofeng",
            "priority": 3,
            "cost": 0,
        }
        status = (await client.get(f"/api/v1/status/{body['order_id']}", headers=auth(key))).json()
        assert status["status"] == "pending"
        assert status["queue_position"] == 1
        assert (status["width"], status["height"], status["cost"]) == (768, 1152, 1)
        assert status["llm_enhance"] is True
        assert isinstance(status["seed"], int)
        account = (await client.get("/api/v1/account", headers=auth(key))).json()
        assert account["credits"] == {"total": 799, "plan": 799, "topup": 0}


async def test_a_native_order_may_turn_the_safety_check_off(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "pro")
        said = []
        for extra in ({}, {"safety_check": False}):
            r = await client.post("/api/v1/generate", json=SEED_000_BODY | extra, headers=auth(key))
            assert r.status_code == 200, r.text
            async with state.db.transaction() as session:
                order = await session.get(Order, r.json()["order_id"])
                assert order is not None
                said.append(order.safety_check)
        assert said == [True, False]  # whether it is then skipped is the plan's (policy_for)


async def test_both_key_headers_and_key_errors(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        assert (await client.get("/api/v1/account", headers={"X-API-Key": key})).status_code == 200
        assert (await client.get("/api/v1/account", headers=auth(key))).status_code == 200
        for headers in ({}, auth("cfy-" + "x" * 32), {"Authorization": "Basic abc"}):
            r = await client.get("/api/v1/account", headers=headers)
            assert r.status_code == 401
            assert r.json()["ok"] is False
            assert r.json()["error"]["code"] == "unauthorized"
        async with state.db.transaction() as s:
            await revoke_key(s, key)
        r = await client.post("/api/v1/generate", json=SEED_000_BODY, headers=auth(key))
        assert r.status_code == 401
        assert "revoked" in r.json()["error"]["message"]


async def test_free_plan_has_no_api_access(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "free")
        body = SEED_000_BODY | {"style": "turbo"}
        r = await client.post("/api/v1/generate", json=body, headers=auth(key))
        assert r.status_code == 403
        assert "API access requires a paid subscription (Standard and above)" in r.text
        assert (await client.get("/api/v1/account", headers=auth(key))).status_code == 403
        await nothing_happened(state, account.id, 20)


@pytest.mark.parametrize(
    ("change", "status", "needle"),
    [
        ({"prompt": None}, 422, "prompt is required"),
        ({"prompt": "   "}, 422, "prompt is required and must not be empty"),
        ({"prompt": "x" * 2501}, 422, "the limit is 2500"),
        ({"width": 770}, 422, "width must be a multiple of 8, got 770; try 768"),
        ({"height": 4096}, 422, "height must be between 256 and 2048"),
        ({"width": 128}, 422, "width must be between 256 and 2048"),
        ({"style": "vaporwave"}, 422, "valid: general, realistic, anime, guofeng, turbo"),
        ({"product_type": "poster"}, 422, "valid: static_image, batch_4"),
        ({"sytle": "anime"}, 422, "unknown field 'sytle'"),
        ({"width": "wide"}, 422, "width"),
        ({"webhook_url": "ftp://x"}, 422, "webhook_url must be an http(s) URL"),
        ({"webhook_url": "http://[::1/x"}, 422, "webhook_url must be an http(s) URL"),
        ({"webhook_url": "http://ex\u007fample.com/"}, 422, "webhook_url contains the control"),
        ({"output_format": "bmp"}, 422, "output_format must be one of png, jpeg, webp"),
        ({"product_type": "batch_4"}, 403, "at most 3 images per order"),
        ({"product_type": "animation_16f"}, 403, "does not include animation"),
        ({"style": "turbo", "steps": 8}, 422, "turbo runs 1 to 4 steps, got 8"),
        ({"image": "data:image/png;base64,AAAA"}, 422, "image"),
        ({"strength": 1.5}, 422, "strength must be in (0, 1]"),
    ],
)
async def test_bad_requests_are_refused_and_nothing_is_charged(
    settings: Settings, change: dict[str, Any], status: int, needle: str
) -> None:
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "standard")
        body = {k: v for k, v in (SEED_000_BODY | change).items() if v is not None}
        r = await client.post("/api/v1/generate", json=body, headers=auth(key))
        assert r.status_code == status, r.text
        assert r.json()["ok"] is False
        assert needle in r.json()["error"]["message"]
        await nothing_happened(state, account.id, 300)


async def test_invalid_json_and_non_object(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        headers = auth(key) | {"content-type": "application/json"}
        r = await client.post("/api/v1/generate", content=b"{nope", headers=headers)
        assert r.status_code == 422
        assert "not valid JSON" in r.json()["error"]["message"]
        r = await client.post("/api/v1/generate", json=[1, 2], headers=auth(key))
        assert r.status_code == 422


async def test_plan_gating_by_style(settings: Settings, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text("[plans.free]\napi_access = true\n")
    settings = settings.model_copy(update={"catalog": catalog})
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "free")
        r = await client.post("/api/v1/generate", json=SEED_000_BODY, headers=auth(key))
        assert r.status_code == 403
        assert "does not include 'guofeng'; it allows turbo" in r.json()["error"]["message"]
        await nothing_happened(state, account.id, 20)
        body = SEED_000_BODY | {"style": "turbo", "width": 512, "height": 512}
        r = await client.post("/api/v1/generate", json=body, headers=auth(key))
        assert r.status_code == 200


async def test_quota_exhausted_is_402(settings: Settings, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text("[plans.standard]\ncredits = 2\n")
    settings = settings.model_copy(update={"catalog": catalog})
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        body = SEED_000_BODY | {"webhook_url": None}
        for _ in range(2):
            r = await client.post("/api/v1/generate", json=body, headers=auth(key))
            assert r.status_code == 200
        r = await client.post("/api/v1/generate", json=body, headers=auth(key))
        assert r.status_code == 402
        assert r.json()["error"]["code"] == "quota_exceeded"
        assert "costs 1 credits but 0 are left" in r.json()["error"]["message"]


async def test_idempotency_key(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        headers = auth(key) | {"Idempotency-Key": "abc-1"}
        first = await client.post("/api/v1/generate", json=SEED_000_BODY, headers=headers)
        again = await client.post("/api/v1/generate", json=SEED_000_BODY, headers=headers)
        assert first.status_code == again.status_code == 200
        assert first.json()["order_id"] == again.json()["order_id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        other = await client.post(
            "/api/v1/generate", json=SEED_000_BODY | {"prompt": "another"}, headers=headers
        )
        assert other.status_code == 409
        assert "Idempotency-Key 'abc-1' was used for another request" in other.text
        acct = (await client.get("/api/v1/account", headers=auth(key))).json()
        assert acct["credits"]["total"] == 299


async def test_orders_are_private_listed_newest_first_and_cancellable(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        _, other_key = await new_account(state, "standard")
        ids = []
        for i in range(5):
            body = SEED_000_BODY | {"prompt": f"picture {i}"}
            r = await client.post("/api/v1/generate", json=body, headers=auth(key))
            ids.append(r.json()["order_id"])
        r = await client.get(f"/api/v1/status/{ids[0]}", headers=auth(other_key))
        assert r.status_code == 404
        assert "picture" not in r.text
        page = (await client.get("/api/v1/orders?limit=3", headers=auth(key))).json()
        assert [o["order_id"] for o in page["orders"]] == ids[::-1][:3]
        rest = (
            await client.get(
                f"/api/v1/orders?limit=3&before={page['next_before']}", headers=auth(key)
            )
        ).json()
        assert [o["order_id"] for o in rest["orders"]] == ids[::-1][3:]
        assert rest["next_before"] is None
        position = (await client.get(f"/api/v1/status/{ids[4]}", headers=auth(key))).json()
        assert position["queue_position"] == 5

        assert (
            await client.post(f"/api/v1/orders/{ids[0]}/cancel", headers=auth(other_key))
        ).status_code == 404
        r = await client.post(f"/api/v1/orders/{ids[0]}/cancel", headers=auth(key))
        assert r.json() == {
            "ok": True,
            "order_id": ids[0],
            "status": "canceled",
            "cancel_requested": False,
            "refunded": 1,
        }
        r = await client.post(f"/api/v1/orders/{ids[0]}/cancel", headers=auth(key))
        assert r.status_code == 409
        acct = (await client.get("/api/v1/account", headers=auth(key))).json()
        assert acct["credits"]["total"] == 300 - 4
        status = (await client.get(f"/api/v1/status/{ids[0]}", headers=auth(key))).json()
        assert status["status"] == "canceled"
        assert status["error"]["code"] == "canceled"


async def test_public_plans_and_health(settings: Settings) -> None:
    async with app_client(settings) as (client, _):
        plans = (await client.get("/api/v1/plans")).json()["plans"]
        assert [p["id"] for p in plans] == ["free", "standard", "pro", "mega"]
        assert plans[0]["styles"] == ["turbo"]
        health = (await client.get("/healthz")).json()
        assert health["ok"] is True
        r = await client.get("/api/v1/nothing-here")
        assert r.status_code == 404
        assert r.json()["ok"] is False
