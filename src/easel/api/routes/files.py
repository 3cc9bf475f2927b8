"""Signed, expiring output URLs: GET /files/{key}?expires=&signature=."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from easel.api.deps import State
from easel.api.errors import NativeError, error_responses
from easel.api.intake import CheckedRoute
from easel.errors import Forbidden, NotFound
from easel.storage.local import LocalStorage, SignatureError

router = APIRouter(
    route_class=CheckedRoute, tags=["files"], responses=error_responses(NativeError, (403, 404))
)

MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".mp4": "video/mp4",
}


FILE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The output's bytes",
        "content": {
            media: {"schema": {"type": "string", "format": "binary"}}
            for media in MEDIA_TYPES.values()
        },
    }
}


@router.get(
    "/files/{key:path}",
    summary="Download an output by its signed URL",
    response_class=FileResponse,
    responses=FILE_RESPONSE,
)
async def get_file(key: str, expires: int, signature: str, state: State) -> FileResponse:
    if not isinstance(state.storage, LocalStorage):
        raise NotFound("outputs are served by the object store; read the order's status for URLs")
    try:
        path = state.storage.verify(key, expires, signature)
    except (SignatureError, ValueError) as exc:
        raise Forbidden(str(exc)) from exc
    if not path.is_file():
        raise NotFound("this output no longer exists (outputs expire after the retention period)")
    return FileResponse(
        path,
        media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
        headers={"Cache-Control": "private, max-age=3600"},
    )
