"""`easel serve` never gives up on its worker child: ten SIGKILLs 2-8 s apart, the worker comes
back each time, every order completes once and is charged once, and `/readyz` says 503 while the
worker is down and 200 once it is back."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from easel.db.engine import Database
from easel.db.tables import LedgerEntry, Order
from tests.support.app import free_port
from tests.support.catalogs import tiny_catalog
from tests.support.databases import sqlite_url

pytestmark = pytest.mark.slow

# Seconds between kills: seven deaths, each within STABLE_SECONDS of the start before it, so the
# backoff reaches its cap (EASEL_CHILD_RESTART_MAX) and the supervisor still never gives up.
GAPS = (1.5, 2.0, 1.5, 3.0, 1.5, 2.0, 1.5)
BODY = {"style": "general", "prompt": "a lighthouse", "width": 256, "height": 256, "steps": 12}


@contextmanager
def serve(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "easel", "serve"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{env['EASEL_PORT']}"
    try:
        deadline = time.monotonic() + 60
        while not (key := re.search(r"key: (cfy-\w{32})", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield proc, base, key.group(1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def worker_pid(serve_pid: int) -> int | None:
    found = subprocess.run(
        ["pgrep", "-P", str(serve_pid), "-f", "easel worker$"], capture_output=True, text=True
    ).stdout.split()
    return int(found[0]) if found else None


def until(what: str, check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_serve_restarts_its_worker_forever(tmp_path: Path, tiny_sdxl: Path) -> None:
    db_url = sqlite_url(tmp_path)
    env = os.environ | {
        "EASEL_DATA_DIR": str(tmp_path / "data"),
        "EASEL_DATABASE_URL": db_url,
        "EASEL_CATALOG": str(tiny_catalog(tmp_path / "catalog.toml", tiny_sdxl)),
        "EASEL_HOST": "127.0.0.1",
        "EASEL_PORT": str(free_port()),
        "EASEL_SECRET_KEY": "e2e-secret",
        "EASEL_LOG_LEVEL": "WARNING",
        "EASEL_CHILD_RESTART_FIRST": "0.25",
        "EASEL_CHILD_RESTART_MAX": "1",  # the capped backoff, short for the test (default 60)
        "EASEL_LEASE_SECONDS": "3",  # a killed worker's order is back in the queue quickly
        "EASEL_REAPER_INTERVAL": "0.5",
        "EASEL_MAX_ATTEMPTS": "30",  # every kill may hit a running order: never give up on one
        "EASEL_WORKER_HEARTBEAT_SECONDS": "2",
    }
    log = tmp_path / "serve.log"
    with serve(env, log) as (proc, base, key):
        client = httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30)

        def ready() -> bool:
            try:
                return client.get("/readyz").status_code == 200
            except httpx.TransportError:  # not listening yet
                return False

        until("the first worker", ready)
        orders = [client.post("/api/v1/generate", json=BODY).json()["order_id"]]
        for i, gap in enumerate(GAPS):
            pid = worker_pid(proc.pid)
            if pid is None:  # between a death and the restart: it comes back
                until("the worker to come back", lambda: worker_pid(proc.pid) is not None)
                pid = worker_pid(proc.pid)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            until("/readyz to say the worker is down", lambda: not ready(), timeout=5)
            down = client.get("/readyz")
            assert down.status_code == 503
            assert "worker" in " ".join(down.json()["reasons"]), down.json()
            until(
                f"the worker to come back after kill {i + 1}",
                lambda: worker_pid(proc.pid) not in (None, pid),  # noqa: B023
                timeout=30,
            )
            if i % 3 == 0:
                orders.append(client.post("/api/v1/generate", json=BODY).json()["order_id"])
            time.sleep(gap)
        until("/readyz 200 after the last restart", ready)
        assert client.get("/readyz").json()["embedded_worker"] == "up"
        for order_id in orders:
            until(
                f"order {order_id} to finish",
                lambda: (
                    client.get(f"/api/v1/status/{order_id}").json()["status"]  # noqa: B023
                    in ("completed", "failed", "canceled")
                ),
                timeout=90,
            )
            status = client.get(f"/api/v1/status/{order_id}").json()
            assert status["status"] == "completed", status
        metrics = client.get("/metrics").text
        restarts = f'easel_child_restarts_total{{command="worker"}} {len(GAPS)}.0'
        assert restarts in metrics, metrics
        client.close()
    text = log.read_text()
    assert "child_gave_up" not in text and "not restarting" not in text
    assert text.count("possibly the OOM killer") == len(GAPS), text[-3000:]

    async def charges() -> dict[str, tuple[int, int]]:
        db = Database(db_url)
        try:
            async with db.transaction() as s:
                rows = await s.execute(
                    select(LedgerEntry.order_id, LedgerEntry.kind, func.count())
                    .where(LedgerEntry.order_id.in_(orders))
                    .group_by(LedgerEntry.order_id, LedgerEntry.kind)
                )
                counts: dict[str, tuple[int, int]] = {o: (0, 0) for o in orders}
                for order_id, kind, n in rows:
                    debit, refund = counts[order_id]
                    counts[order_id] = (debit + n, refund) if kind == "debit" else (debit, n)
                done = await s.scalar(
                    select(func.count()).where(Order.id.in_(orders), Order.status == "completed")
                )
                assert done == len(orders)
                return counts
        finally:
            await db.dispose()

    assert asyncio.run(charges()) == {o: (1, 0) for o in orders}
