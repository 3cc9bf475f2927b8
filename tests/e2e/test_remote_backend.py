"""Backends are async: one that waits on a remote API keeps up to its `max_in_flight` orders
going at once, and a worker that serves no local family never imports torch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from easel.api.state import AppState
from easel.config import Settings
from tests.support import remote_backend
from tests.support.app import new_account
from tests.support.catalogs import tiny_catalog, with_caps
from tests.support.generation import place, wait_orders
from tests.support.worker import running_worker

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ORDERS = 8


def remote_settings(settings: Settings, tmp_path: Path, url: str) -> Settings:
    settings = with_caps(settings, tmp_path, ORDERS)
    assert settings.catalog is not None
    caps = settings.catalog.read_text()
    catalog = tiny_catalog(
        tmp_path / "catalog.toml", tmp_path, extra=caps + remote_backend.catalog_table(url)
    )
    # One order per batch: concurrency comes from batches in flight, not from one big call.
    return settings.model_copy(update={"catalog": catalog, "max_batch_images": 1})


async def test_a_remote_backend_keeps_several_orders_in_flight(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote_backend.register(monkeypatch)
    with remote_backend.image_server(delay=0.5) as server:
        state = AppState.build(remote_settings(settings, tmp_path, server.url))
        try:
            account, _ = await new_account(state, "mega")
            ids = [await place(state, account, seed=i, style="remote") for i in range(ORDERS)]
            async with running_worker(state, models=["remote-x"]):
                ended = await wait_orders(state, ids, timeout=60)
        finally:
            await state.db.dispose()
    assert [o.status for o in ended] == ["completed"] * ORDERS
    assert server.served == ORDERS
    assert server.peak == remote_backend.RemoteImageBackend.max_in_flight


WORKER = f"""
import sys
sys.modules["torch"] = None  # any import of torch now fails
from easel.backends import registry
registry.FAMILIES[{remote_backend.FAMILY!r}] = {remote_backend.PATH!r}
from easel.cli import main
main(["worker", "--models", "remote-x"])
"""


async def test_a_worker_without_local_families_runs_without_torch(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote_backend.register(monkeypatch)
    with remote_backend.image_server(delay=0.1) as server:
        settings = remote_settings(settings, tmp_path, server.url)
        state = AppState.build(settings)
        env = os.environ | {
            "PYTHONPATH": str(ROOT),
            "EASEL_DATA_DIR": str(settings.data_dir),
            "EASEL_DATABASE_URL": settings.db_url,
            "EASEL_CATALOG": str(settings.catalog),
            "EASEL_SECRET_KEY": settings.secret_key,
            "EASEL_POLL_INTERVAL": "0.1",
        }
        log = tmp_path / "worker.log"
        try:
            account, _ = await new_account(state, "mega")
            ids = [await place(state, account, seed=i, style="remote") for i in range(3)]
            with log.open("wb") as out:
                proc = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for below
                    [sys.executable, "-c", WORKER], env=env, stdout=out, stderr=subprocess.STDOUT
                )
                try:
                    ended = await wait_orders(state, ids, timeout=60)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    code = proc.wait(timeout=60)
        finally:
            await state.db.dispose()
    output = log.read_text()
    assert [o.status for o in ended] == ["completed"] * 3, output
    assert code == 0, output
    assert "torch" not in output, output
