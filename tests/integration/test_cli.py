"""The operator's CLI against a real SQLite database."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from easel.cli import main
from easel.config import get_settings


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("EASEL_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True) -> str:
        result = runner.invoke(main, list(args))
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    yield invoke
    get_settings.cache_clear()


def test_accounts_keys_and_plans(run) -> None:  # type: ignore[no-untyped-def]
    assert "up to date" in run("migrate")
    assert "plan=standard" in run("accounts", "create", "--email", "Ana@Example.com")
    assert "already exists" in run("accounts", "create", "--email", "ana@example.com", ok=False)
    assert "unknown plan 'gold'" in run(
        "accounts", "create", "--email", "b@example.com", "--plan", "gold", ok=False
    )
    assert "balance 325 (plan 300, top-up 25)" in run(
        "accounts", "grant", "--account", "ana@example.com", "--credits", "25"
    )
    key = run("keys", "create", "--account", "ana@example.com").strip().splitlines()[-1]
    assert re.fullmatch(r"cfy-[A-Za-z0-9]{32}", key)
    listing = run("keys", "list", "--account", "ana@example.com")
    assert key[:8] + "…" in listing and "active" in listing
    assert "revoked key_" in run("keys", "revoke", key)
    assert "revoked" in run("keys", "list", "--account", "ana@example.com")
    assert "now on plan pro" in run(
        "accounts", "plan", "--account", "ana@example.com", "--plan", "pro"
    )
    plans = run("plans")
    assert re.search(r"free\s+20\s+0\s+1\s+no\s+no", plans)
    assert re.search(r"mega\s+2000\s+4\s+12\s+yes\s+yes", plans)
    assert "no account" in run("keys", "create", "--account", "nobody@example.com", ok=False)
