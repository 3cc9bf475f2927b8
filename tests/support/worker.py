"""An in-process worker on the test's event loop, and polling helpers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from easel.api.state import AppState
from easel.worker.runner import Worker


@asynccontextmanager
async def running_worker(state: AppState, **options: Any) -> AsyncIterator[Worker]:
    """`options`: Worker's keyword options (models, preload)."""
    worker = Worker(state.settings, state.catalog, state.db, state.storage, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=120)


async def wait_status(
    client: httpx.AsyncClient,
    order_id: str,
    headers: dict[str, str],
    until: tuple[str, ...] = ("completed", "failed", "canceled"),
    timeout: float = 120,
    check: Any = None,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get(f"/api/v1/status/{order_id}", headers=headers)
        body: dict[str, Any] = r.json()
        if body.get("status") in until and (check is None or check(body)):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"order {order_id} stayed {body.get('status')}: {body}")
        await asyncio.sleep(0.05)
