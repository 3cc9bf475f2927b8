"""A sixth dialect is one new file plus its model names in the catalog: the registry finds it,
the app mounts its routes and error shape, and its orders are its own."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import easel.dialects
from easel.config import Settings
from easel.dialects import registry
from tests.support import extra_dialects
from tests.support.app import app_client, auth, new_account

pytestmark = pytest.mark.anyio


async def test_a_dialect_module_is_all_it_takes(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The new file, found as src/easel/dialects/acme.py would be.
    monkeypatch.setattr(
        easel.dialects, "__path__", [*easel.dialects.__path__, *extra_dialects.__path__]
    )
    monkeypatch.setattr(registry, "DIALECTS", registry._discover())
    sys.modules.pop("easel.dialects.acme")  # imported by _discover; no trace for other tests
    assert next(iter(registry.DIALECTS)) == "native" and "acme" in registry.DIALECTS
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(
        '[dialects]\nacme = ["acme-fast"]\n[models.sdxl-turbo]\naliases = ["acme-fast"]\n'
    )
    settings = settings.model_copy(update={"catalog": catalog})
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "standard")
        created = await client.post(
            "/acme/v1/jobs",
            json={"model": "acme-fast", "prompt": "a kite", "size": "512x512"},
            headers=auth(key),
        )
        assert created.status_code == 200, created.text
        job = created.json()
        assert job["state"] == "queued" and job["images"] == []
        again = await client.get(f"/acme/v1/jobs/{job['id']}", headers=auth(key))
        assert again.json() == job
        # Its own error shape, and a model name it does not accept.
        refused = await client.post(
            "/acme/v1/jobs", json={"model": "dall-e-3", "prompt": "a kite"}, headers=auth(key)
        )
        assert refused.status_code == 422
        assert "accepted: acme-fast" in refused.json()["error"]
        # Its orders are its own: another dialect's status endpoint does not show them.
        other = await client.get(f"/api/v1/tasks/{job['id']}", headers=auth(key))
        assert (other.status_code, other.json()["code"]) == (200, 0)  # seed 002: not found
        schema = (await client.get("/openapi.json")).json()
        assert "/acme/v1/jobs" in schema["paths"]
        assert registry.dialect_of("acme").callback_body is not None
