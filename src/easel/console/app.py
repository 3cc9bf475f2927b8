"""Mounting the console on the FastAPI app: its pages, its static files, and `/` -> /console/."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from easel.console import account_pages, admin_pages, order_pages, pages
from easel.console.web import HERE

root = APIRouter(include_in_schema=False)


@root.get("/")
async def to_console() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


@root.get("/console")
async def to_console_slash() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


def install(app: FastAPI) -> None:
    app.include_router(root)
    for module in (account_pages, pages, order_pages, admin_pages):
        app.include_router(module.router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
