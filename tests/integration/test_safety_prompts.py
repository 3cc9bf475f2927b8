"""A prompt on the catalog's safety list is refused in each dialect's shape, nothing charged; the
operator's extra terms add to the shipped list."""

from __future__ import annotations

from pathlib import Path

import pytest

from easel.config import Settings
from tests.support.app import app_client, auth, new_account
from tests.support.audit import nothing_happened
from tests.support.seeds import SEED_000_BODY, SEED_001_BODY

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]
REFUSED = "a toddler, naked, on a beach"


async def test_listed_prompts_are_refused_with_nothing_charged(
    settings: Settings, tmp_path: Path
) -> None:
    operator = tmp_path / "catalog.toml"
    operator.write_text('[safety]\nextra_terms = ["glorbnax"]\n')
    settings = settings.model_copy(update={"catalog": operator})
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "pro")
        r = await client.post(
            "/api/v1/generate", json=SEED_000_BODY | {"prompt": REFUSED}, headers=auth(key)
        )
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "content_policy"
        assert "content policy" in error["message"] and "Nothing was charged" in error["message"]
        r = await client.post(
            "/api/v1/qwen/generate",
            json=SEED_001_BODY | {"prompt": "Glorbnax at dawn"},
            headers=auth(key),
        )
        assert (r.status_code, r.json()["code"]) == (400, 400)
        assert "content policy" in r.json()["msg"]
        r = await client.post(
            "/v1/images/generations",
            json={"model": "dall-e-3", "prompt": "儿童色情"},
            headers=auth(key),
        )
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "content_policy_violation"  # OpenAI's code
        await nothing_happened(state, account.id, 800)
        fine = SEED_000_BODY | {"prompt": "children playing in a park", "webhook_url": None}
        r = await client.post("/api/v1/generate", json=fine, headers=auth(key))
        assert r.status_code == 200, r.text
