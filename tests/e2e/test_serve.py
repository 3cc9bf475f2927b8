"""`easel serve` as an operator runs it: real processes, real HTTP, a local model folder."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from PIL import Image

from easel.db.engine import Database
from easel.db.tables import Order
from tests.support.app import free_port
from tests.support.catalogs import tiny_catalog
from tests.support.receiver import webhook_receiver
from tests.support.seeds import SEED_000_BODY as SEED_000

pytestmark = pytest.mark.slow

SEED_000_BODY = {k: v for k, v in SEED_000.items() if k != "webhook_url"}


@contextmanager
def easel_serve(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """The server process, its base URL and the admin key it printed once."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "easel", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{env['EASEL_PORT']}"
    try:
        key = None
        lines = []
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while key is None:
            line = proc.stdout.readline()
            lines.append(line)
            if found := re.search(r"key: (cfy-\w{32})", line):
                key = found.group(1)
            if (not line and proc.poll() is not None) or time.monotonic() > deadline:
                raise AssertionError("easel serve printed no admin key:\n" + "".join(lines))
        while True:
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield proc, base, key
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def wait(client: httpx.Client, order_id: str, until: tuple[str, ...], step: int = 0) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 180
    while True:
        body = client.get(f"/api/v1/status/{order_id}").json()
        if body["status"] in until and body["step"] >= step:
            return body  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_easel_serve_generates_notifies_and_stops_cleanly(
    db_url: str, tmp_path: Path, tiny_sdxl: Path
) -> None:
    is_pg = db_url.startswith("postgresql")
    env = os.environ | {
        "EASEL_DATA_DIR": str(tmp_path / "data"),
        "EASEL_DATABASE_URL": db_url,
        "EASEL_CATALOG": str(tiny_catalog(tmp_path / "catalog.toml", tiny_sdxl)),
        "EASEL_HOST": "127.0.0.1",
        "EASEL_PORT": str(free_port()),
        "EASEL_SECRET_KEY": "e2e-secret",
        # PostgreSQL: only LISTEN/NOTIFY can wake the worker within this test.
        "EASEL_POLL_INTERVAL": "60" if is_pg else "0.1",
        "EASEL_LOG_LEVEL": "WARNING",
        "EASEL_ALLOWED_NETWORKS": '["127.0.0.0/8"]',  # the webhook receiver is on loopback
    }
    with ExitStack() as stack:
        hooks = stack.enter_context(webhook_receiver())
        proc, base, key = stack.enter_context(easel_serve(env))
        client = httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30)
        stack.callback(client.close)
        time.sleep(1.0)  # let the worker reach its idle wait
        body = SEED_000_BODY | {"webhook_url": hooks.url}
        order_id = client.post("/api/v1/generate", json=body).json()["order_id"]
        status = wait(client, order_id, ("completed", "failed"))
        assert status["status"] == "completed", status
        started = datetime.fromisoformat(status["started_at"])
        created = datetime.fromisoformat(status["created_at"])
        assert (started - created).total_seconds() < 5  # far below the 60 s poll interval
        image = Image.open(io.BytesIO(httpx.get(status["output_urls"][0]).content))
        assert (image.format, image.size) == ("PNG", (768, 1152))
        call = hooks.wait_for(1)[0]
        assert call.body["order_id"] == order_id
        assert call.body["status"] == "completed"
        assert call.body["output_urls"][0].split("?")[0] == status["output_urls"][0].split("?")[0]

        # A worker that dies is restarted by `easel serve`; the next order still runs.
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid), "-f", "easel worker$"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert len(children) == 1
        os.kill(int(children[0]), signal.SIGKILL)
        again = client.post("/api/v1/generate", json=SEED_000_BODY | {"width": 256, "height": 256})
        assert wait(client, again.json()["order_id"], ("completed", "failed"))["status"] == (
            "completed"
        )

        # SIGTERM while an order runs: the worker finishes it, then everything exits.
        long_body = SEED_000_BODY | {"steps": 30, "width": 512, "height": 512}
        long = client.post("/api/v1/generate", json=long_body).json()
        wait(client, long["order_id"], ("running",), step=1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=180) == 0

    async def final_status() -> str:
        db = Database(db_url)
        try:
            async with db.transaction() as s:
                order = await s.get(Order, long["order_id"])
                assert order is not None
                return order.status
        finally:
            await db.dispose()

    assert asyncio.run(final_status()) == "completed"
