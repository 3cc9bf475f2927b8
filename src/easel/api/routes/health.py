from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

from easel import __version__
from easel.api.deps import State
from easel.api.intake import CheckedRoute

router = APIRouter(route_class=CheckedRoute, tags=["health"])


class Health(BaseModel):
    ok: bool
    version: str
    database: str


@router.get("/healthz", summary="Liveness and database reachability", response_model=Health)
async def healthz(state: State) -> dict[str, Any]:
    async with state.db.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return {"ok": True, "version": __version__, "database": state.db.url.get_backend_name()}
