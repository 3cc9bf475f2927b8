"""The app in-process (ASGI) or as a real uvicorn server on a loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
import uvicorn
from fastapi import FastAPI

from easel.accounts.accounts import create_account
from easel.accounts.keys import create_key
from easel.accounts.ledger import top_up
from easel.api.app import Server, create_app
from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.tables import Account


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    state = AppState.build(settings)
    app = create_app(settings, state)
    app.state.easel = state
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url=settings.base_url) as client:
            yield client, state
    finally:
        await state.close()


async def new_account(
    state: AppState, plan: str = "standard", topup: int = 0, email: str | None = None
) -> tuple[Account, str]:
    """An account and one plain API key."""
    async with state.db.transaction() as session:
        account = await create_account(
            session, state.catalog, email or f"{plan}-{time.monotonic_ns()}@example.com", plan
        )
        _, key = await create_key(session, account.id)
        if topup:
            await top_up(session, account.id, topup, utcnow())
    return account, key


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[AppState, str]]:
    """A real server on a free loopback port, and the test's own handle on its database and
    store (for a worker on the test's loop, and for looking behind the API)."""
    settings = settings.model_copy(update={"host": "127.0.0.1", "port": free_port()})
    state = AppState.build(settings)
    try:
        with running_server(settings) as base:
            yield state, base
    finally:
        await state.db.dispose()


@contextmanager
def running_server(settings: Settings, app: FastAPI | None = None) -> Iterator[str]:
    """A real uvicorn server for `settings` (or `app`, to look at its state) on
    127.0.0.1:settings.port, in a thread; stopped as `easel serve` stops (open streams end)."""
    app = app or create_app(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=settings.port, log_level="warning", lifespan="on"
    )
    server = Server(config, app)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
