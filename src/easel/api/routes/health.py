from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from easel import __version__
from easel.api.deps import State

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness and database reachability")
async def healthz(state: State) -> Any:
    async with state.db.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return {"ok": True, "version": __version__, "database": state.db.url.get_backend_name()}
