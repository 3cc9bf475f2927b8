"""Rate limits by plan, per API key and per account, in memory and in Redis: requests per minute
and requests open at once, 429 with Retry-After in each dialect's shape, and another account
never slowed by a noisy one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from easel.accounts.keys import create_key
from easel.config import Settings
from tests.support.app import app_client, auth, new_account
from tests.support.redis import forget

pytestmark = pytest.mark.anyio


@pytest.fixture
def limited(settings: Settings, tmp_path: Path, rate_limit_storage: str) -> Iterator[Settings]:
    prefix = f"easel-test-{uuid.uuid4().hex[:8]}:"
    catalog = tmp_path / "limits.toml"
    catalog.write_text(
        "[plans.standard]\nrequests_per_minute = 4\nkey_requests_per_minute = 3\n"
        "max_open_requests = 1\nkey_max_open_requests = 1\n"
    )
    yield settings.model_copy(
        update={
            "rate_limits": True,
            "rate_limit_storage": rate_limit_storage,
            "rate_limit_prefix": prefix,
            "catalog": catalog,
            "openai_wait_timeout": 1.5,
        }
    )
    if rate_limit_storage:
        forget(prefix)


async def test_requests_per_minute_per_key_and_account(limited: Settings) -> None:
    async with app_client(limited) as (client, state):
        try:
            account, first = await new_account(state, "standard")
            async with state.db.transaction() as session:
                _, second = await create_key(session, account.id, "second")
            _, neighbour = await new_account(state, "standard")
            for _ in range(3):
                assert (await client.get("/api/v1/account", headers=auth(first))).status_code == 200
            over = await client.get("/api/v1/account", headers=auth(first))
            assert over.status_code == 429 and int(over.headers["retry-after"]) >= 1
            assert over.json()["error"]["code"] == "rate_limited"
            assert "this API key" in over.json()["error"]["message"]
            # The account's fourth request, by its other key; the fifth is over the account's.
            assert (await client.get("/api/v1/account", headers=auth(second))).status_code == 200
            kirin = await client.get("/kirin/v1/images/generations/ORD-x", headers=auth(second))
            assert kirin.status_code == 429 and kirin.json()["error"]["code"] == "rate_limited"
            assert "this account" in kirin.json()["error"]["error_message"]
            openai = await client.get("/v1/models", headers=auth(first))
            assert openai.status_code == 429
            assert openai.json()["error"]["code"] == "rate_limit_exceeded"
            assert openai.headers["x-should-retry"] == "true"
            # A noisy account takes nothing from another one.
            assert (await client.get("/api/v1/account", headers=auth(neighbour))).status_code == 200
        finally:
            await state.limits.close()


async def test_an_unreachable_redis_lets_requests_through(settings: Settings) -> None:
    settings = settings.model_copy(
        update={"rate_limits": True, "rate_limit_storage": "redis://127.0.0.1:1/0"}
    )
    async with app_client(settings) as (client, state):
        try:
            _, key = await new_account(state, "standard")
            for _ in range(3):
                assert (await client.get("/api/v1/account", headers=auth(key))).status_code == 200
        finally:
            await state.limits.close()


async def test_open_requests_are_bounded(limited: Settings) -> None:
    async with app_client(limited) as (client, state):
        try:
            _, key = await new_account(state, "standard")
            _, neighbour = await new_account(state, "standard")
            waiting = asyncio.create_task(
                client.post(
                    "/v1/images/generations",
                    json={"model": "dall-e-3", "prompt": "a kite", "size": "512x512"},
                    headers=auth(key),
                )
            )
            await asyncio.sleep(0.4)  # the wait is open now (no worker: it times out)
            busy = await client.get("/api/v1/account", headers=auth(key))
            assert busy.status_code == 429, busy.text
            assert "requests open" in busy.json()["error"]["message"]
            assert (await client.get("/api/v1/account", headers=auth(neighbour))).status_code == 200
            assert (await waiting).status_code == 504
            assert (await client.get("/api/v1/account", headers=auth(key))).status_code == 200
        finally:
            await state.limits.close()
