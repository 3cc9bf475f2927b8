"""No database connection free in time: 503 with Retry-After in the dialect's shape, never a
500, and nothing charged (PostgreSQL, whose pool is bounded by EASEL_DB_POOL_*)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from easel.config import Settings
from tests.support.app import app_client, auth, new_account

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

BODY = {"style": "general", "prompt": "a boat", "width": 512, "height": 512}


async def test_an_exhausted_pool_answers_503_with_retry_after(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=postgres_url,
        secret_key="test-secret-key",
        db_pool_size=1,
        db_pool_overflow=0,
        db_pool_timeout=0.2,
    )
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "mega")
        async with state.db.connect() as held:  # the pool's only connection
            await held.execute(text("SELECT 1"))
            native = await client.post("/api/v1/generate", json=BODY, headers=auth(key))
            openai = await client.post(
                "/v1/images/generations",
                json={"model": "dall-e-3", "prompt": "a boat"},
                headers=auth(key),
            )
            kirin = await client.get("/kirin/v1/images/generations/ORD-x", headers=auth(key))
        assert native.status_code == 503 and native.headers["retry-after"] == "1"
        assert native.json()["error"]["code"] == "busy"
        assert "EASEL_DB_POOL_SIZE" in native.json()["error"]["message"]
        assert openai.status_code == 503 and openai.headers["x-should-retry"] == "true"
        assert openai.json()["error"]["type"] == "server_error"
        assert kirin.status_code == 503 and kirin.json()["error"]["code"] == "busy"
        after = await client.get("/api/v1/account", headers=auth(key))
        assert after.status_code == 200 and after.json()["credits"]["total"] == 2000
