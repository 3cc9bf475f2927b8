"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from easel import __version__
from easel.api import errors
from easel.api.dialects import kie, kirin, native, openai_images, tasks
from easel.api.limits import BodyLimit
from easel.api.routes import events, files, health, webhooks, workers
from easel.api.state import AppState
from easel.config import Settings, get_settings


def create_app(settings: Settings | None = None, state: AppState | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.easel = state or AppState.build(settings)
        try:
            yield
        finally:
            if state is None:
                await app.state.easel.db.dispose()

    app = FastAPI(
        title="Easel",
        version=__version__,
        description="Self-hosted image and animation generation, speaking several providers' APIs.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    errors.install(
        app,
        [
            (kie.PREFIX, kie.error_response),
            (tasks.PREFIX, tasks.error_response),
            (kirin.PREFIX, kirin.error_response),
            (openai_images.PREFIX, openai_images.error_response),
        ],
    )
    for router in (native.router, kie.router, tasks.router, kirin.router, openai_images.router):
        app.include_router(router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    app.include_router(files.router)
    app.include_router(health.router)
    app.include_router(workers.router)
    return app
