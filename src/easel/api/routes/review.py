"""The operator's review of outputs the safety check flagged or blocked (docs/safety.md):
GET /api/v1/admin/review, POST /api/v1/admin/review/{output_id}/release and /confirm."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from easel.api.deps import ReadSessionDep, State
from easel.api.errors import NativeError, error_responses
from easel.api.intake import CheckedRoute
from easel.api.routes.admin import AdminAccount
from easel.clock import utcnow
from easel.db.tables import Order, Output
from easel.errors import Conflict
from easel.media.video import poster_key
from easel.orders import review
from easel.storage import MissingObject

router = APIRouter(
    route_class=CheckedRoute,
    tags=["admin"],
    responses=error_responses(NativeError, (404, 409, 503)),
)


class ReviewItem(BaseModel):
    output_id: int
    order_id: str
    account_id: str
    index: int
    safety: str = Field(
        description="flagged (shown to the client), blurred (a blurred copy shown, the original "
        "held) or blocked (held, not shown)"
    )
    nsfw_score: float | None
    prompt: str
    order_status: str
    url: str = Field(
        description="A signed link to the file (a blurred one's original), for the operator only"
    )


class ReviewList(BaseModel):
    items: list[ReviewItem]
    next_after: int | None = Field(description="Pass as `after` for the next page; null: last")


class Reviewed(BaseModel):
    output_id: int
    safety: str = Field(description="released or confirmed")
    charged: int = Field(description="Credits charged for a released blocked output")


def files(held: str, shown: str, content_type: str) -> list[tuple[str, str, str]]:
    """(from, to, content type) of a held output's files: the file, and an MP4's poster."""
    moves = [(held, shown, content_type)]
    if content_type == "video/mp4":
        moves.append((poster_key(held), poster_key(shown), "image/jpeg"))
    return moves


def item(output: Output, order: Order, state: Any) -> dict[str, Any]:
    return {
        "output_id": output.id,
        "order_id": order.id,
        "account_id": order.account_id,
        "index": output.index,
        "safety": output.safety,
        "nsfw_score": output.nsfw_score,
        "prompt": order.prompt,
        "order_status": order.status,
        "url": state.storage.url(output.original_key or output.storage_key),
    }


@router.get(
    "/api/v1/admin/review",
    summary="Outputs the safety check flagged or blocked, waiting for review (admin)",
    response_model=ReviewList,
)
async def review_list(
    _admin: AdminAccount,
    session: ReadSessionDep,
    state: State,
    after: int = Query(default=0, ge=0),
    limit: int = Query(default=50, ge=1, le=200),
) -> dict[str, Any]:
    rows = await review.to_review(session, limit + 1, after)
    page = rows[:limit]
    return {
        "items": [item(output, order, state) for output, order in page],
        "next_after": page[-1][0].id if len(rows) > limit else None,
    }


@router.post(
    "/api/v1/admin/review/{output_id}/release",
    summary="Show the output to its client; a blocked one is stored and charged (admin)",
    response_model=Reviewed,
)
async def release(output_id: int, _admin: AdminAccount, state: State) -> dict[str, Any]:
    """Checked and charged under the account's lock, then the held files are copied where the
    client sees them (a blocked output's to the order's folder, a blurred one's original over
    the blurred copy), in the same transaction: a failed copy or commit charges nothing and
    leaves no copy (the blurred copy is put back). The held files are deleted after the commit."""
    copied: list[str] = []
    kept: dict[str, bytes] = {}  # files overwritten, put back on failure
    moves: list[tuple[str, str, str]] = []
    try:
        async with state.db.transaction() as session:
            output, order = await review.reviewed(session, output_id)
            charged = await review.charge_release(session, state.catalog, output, order, utcnow())
            if output.safety == "blocked":
                moves = files(output.storage_key, review.shown_key(output), output.content_type)
            elif output.original_key:  # blurred
                moves = [(output.original_key, output.storage_key, output.content_type)]
                kept[output.storage_key] = await read(state, output.storage_key)
            await copy_files(state, output_id, moves, copied)
            await review.release(session, output, order, utcnow())
    except BaseException:
        for key in copied:
            if key in kept:
                await asyncio.to_thread(state.storage.put, key, kept[key], output.content_type)
            else:
                await asyncio.to_thread(state.storage.delete, key)
        raise
    for source, _target, _kind in moves:
        await asyncio.to_thread(state.storage.delete, source)
    return {"output_id": output_id, "safety": review.RELEASED, "charged": charged}


async def read(state: Any, key: str) -> bytes:
    data: bytes = await asyncio.to_thread(state.storage.get, key)
    return data


async def copy_files(
    state: Any, output_id: int, moves: list[tuple[str, str, str]], copied: list[str]
) -> None:
    """Copy a held output's files where the client sees them, adding each key written to
    `copied`. A held file that is gone is a 409 (a clip from a provider may have no poster)."""
    for number, (source, target, kind) in enumerate(moves):
        try:
            data = await read(state, source)
        except MissingObject:
            if number == 0:
                raise Conflict(
                    f"output {output_id}'s held file is gone from storage; it cannot be "
                    "released, confirm it instead"
                ) from None
            continue
        copied.append(target)
        await asyncio.to_thread(state.storage.put, target, data, kind)


@router.post(
    "/api/v1/admin/review/{output_id}/confirm",
    summary="Agree with the safety check: the output stays hidden, a held file is deleted (admin)",
    response_model=Reviewed,
)
async def confirm(output_id: int, _admin: AdminAccount, state: State) -> dict[str, Any]:
    async with state.db.transaction() as session:
        output, _order = await review.reviewed(session, output_id)
        content_type = output.content_type
        held = await review.confirm(session, output)
    if held:
        for source, _target, _kind in files(held, held, content_type):
            await asyncio.to_thread(state.storage.delete, source)
    return {"output_id": output_id, "safety": review.CONFIRMED, "charged": 0}
