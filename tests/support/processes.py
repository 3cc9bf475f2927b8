"""Easel's own processes (`easel serve --no-worker`, `easel worker`, `easel services`) for crash
and scale tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from easel.api.state import AppState
from easel.config import Settings
from tests.support.app import free_port, new_account


@dataclass
class Cluster:
    """API and worker processes sharing one environment; everything is killed at the end."""

    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "easel", *args],
            env=self.env | extra_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def api(self, name: str = "api", services: bool = True) -> str:
        """`easel serve --no-worker`: the API, and `easel services` as its child unless not
        `services`."""
        port = free_port()
        extra = () if services else ("--no-services",)
        self.start(name, "serve", "--no-worker", *extra, "--host", "127.0.0.1", "--port", str(port))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    return base
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.procs[name].poll() is not None:
                raise AssertionError(f"{name} did not start:\n" + self.log(name))
            time.sleep(0.05)

    def worker(self, name: str) -> subprocess.Popen[bytes]:
        return self.start(name, "worker", EASEL_WORKER_ID=name)

    def services(self, name: str) -> subprocess.Popen[bytes]:
        """`easel services`: reaper, retention sweeper, webhook sender."""
        return self.start(name, "services")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
        proc.wait(timeout=120)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]

    def stop_all(self) -> None:
        for name in self.procs:
            self.kill(name, signal.SIGKILL)


@contextmanager
def cluster(settings: Settings, tmp_path: Path, **env: str) -> Iterator[Cluster]:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    base_env = os.environ | {
        "EASEL_DATA_DIR": str(settings.data_dir),
        "EASEL_DATABASE_URL": settings.db_url,
        "EASEL_SECRET_KEY": settings.secret_key,
        "EASEL_LOG_LEVEL": "INFO",
        "EASEL_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        "EASEL_POLL_INTERVAL": "0.2",
    }
    if settings.catalog:
        base_env["EASEL_CATALOG"] = str(settings.catalog)
    c = Cluster(env=base_env | env, logs=logs)
    try:
        yield c
    finally:
        c.stop_all()


def make_account(settings: Settings, plan: str = "mega", topup: int = 0) -> tuple[str, str]:
    async def _make() -> tuple[str, str]:
        state = AppState.build(settings)
        try:
            account, key = await new_account(state, plan, topup=topup)
            return account.id, key
        finally:
            await state.db.dispose()

    return asyncio.run(_make())


def run_db(settings: Settings, fn: Any) -> Any:
    """Run `await fn(session)` in a read transaction of its own."""

    async def _run() -> Any:
        state = AppState.build(settings)
        try:
            async with state.db.transaction(readonly=True) as session:
                return await fn(session)
        finally:
            await state.db.dispose()

    return asyncio.run(_run())


def wait_order(
    client: httpx.Client, order_id: str, until: tuple[str, ...], timeout: float = 180, step: int = 0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/api/v1/status/{order_id}").json()
        if body.get("status") in until and body.get("step", 0) >= step:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"order {order_id} stayed {body.get('status')}")
        time.sleep(0.05)
