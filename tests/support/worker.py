"""An in-process worker on the test's event loop, and polling helpers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx

from easel.api.state import AppState
from easel.services.host import run_services
from easel.services.hosted import background_services
from easel.worker.runner import Worker

T = TypeVar("T")


@asynccontextmanager
async def running_worker(state: AppState, **options: Any) -> AsyncIterator[Worker]:
    """A worker and the background services beside it, as `easel serve` runs them.
    `options`: Worker's keyword options (models, preload)."""
    worker = Worker(state.settings, state.catalog, state.db, state.storage, **options)
    services = background_services(state.settings, state.db, state.storage)
    stop = asyncio.Event()
    task = asyncio.create_task(run_services([*worker.services(), *services], stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=120)


async def poll_until(
    fetch: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    timeout: float = 120,
    interval: float = 0.05,
    describe: Callable[[T], object] = repr,
) -> T:
    """`fetch()` again every `interval` seconds until `done` holds for what it returns;
    `describe` says what it was when the time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not there after {timeout:g} s: {describe(value)}")
        await asyncio.sleep(interval)


async def wait_status(
    client: httpx.AsyncClient,
    order_id: str,
    headers: dict[str, str],
    until: tuple[str, ...] = ("completed", "failed", "canceled"),
    timeout: float = 120,
    check: Any = None,
) -> dict[str, Any]:
    async def fetch() -> dict[str, Any]:
        body: dict[str, Any] = (
            await client.get(f"/api/v1/status/{order_id}", headers=headers)
        ).json()
        return body

    return await poll_until(
        fetch,
        lambda b: b.get("status") in until and (check is None or check(b)),
        timeout,
    )
