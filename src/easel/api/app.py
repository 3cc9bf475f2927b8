"""The FastAPI application."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from easel import __version__
from easel.api import errors
from easel.api.limits import BodyLimit, json_budget
from easel.api.openapi import with_bounds
from easel.api.request_metrics import RequestMetrics
from easel.api.routes import admin, events, files, health, metrics, review, webhooks, workers
from easel.api.state import AppState
from easel.config import Settings, get_settings
from easel.console.app import install as install_console
from easel.dialects import registry

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, state: AppState | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.easel = state or AppState.build(settings)
        await app.state.easel.feed.start()
        try:
            yield
        finally:
            if state is None:
                await app.state.easel.close()
            else:
                await state.feed.stop()

    app = FastAPI(
        title="Easel",
        version=__version__,
        description="Self-hosted image and animation generation, speaking several providers' APIs.",
        lifespan=lifespan,
    )
    budget = json_budget(settings.max_json_members, settings.max_prompt_chars)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        max_json_bytes=settings.max_json_bytes,
        json_budget=budget,
    )
    app.openapi = with_bounds(app, settings)  # type: ignore[method-assign]
    dialects = registry.DIALECTS.values()
    shapes = [(d.prefix, d.error_response) for d in dialects if d.prefix and d.error_response]
    errors.install(app, shapes)
    for dialect in dialects:
        app.include_router(dialect.router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    app.include_router(files.router)
    app.include_router(health.router)
    app.include_router(workers.router)
    app.include_router(admin.router)
    app.include_router(review.router)
    install_console(app)
    if settings.metrics:
        app.include_router(metrics.router)
        if settings.environment == "production" and not settings.metrics_token:
            log.warning(
                "GET /metrics answers anyone who reaches this port: set EASEL_METRICS_TOKEN, "
                "or block /metrics at the proxy",
                extra={"action": "metrics_open"},
            )
    app.add_middleware(RequestMetrics)  # last added: outermost, sees every answer
    return app


class Server(uvicorn.Server):
    """uvicorn, ending every waiting request first when it shuts down: uvicorn waits for each open
    response before it stops the app, and an event stream would not end on its own. Streams get
    a last `timeout` event that tells the client to reconnect, synchronous waits answer."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.easel_app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state: AppState | None = getattr(self.easel_app.state, "easel", None)
        if state is not None:
            state.feed.close()
        await super().shutdown(sockets)


def server(app: FastAPI, host: str, port: int, log_level: str = "info") -> Server:
    return Server(uvicorn.Config(app, host=host, port=port, log_level=log_level), app)
