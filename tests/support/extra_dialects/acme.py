"""docs/architecture.md's worked example of a sixth dialect, as one file: Acme's job API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from easel.api.deps import CurrentAccount, ReadSessionDep, State
from easel.db.status import OrderStatus
from easel.db.tables import Order, Output
from easel.dialects.base import Dialect, output_urls
from easel.dialects.common import resolve_model
from easel.errors import EaselError, InvalidRequest
from easel.orders import lifecycle, reads
from easel.orders.request import build_request
from easel.orders.submit import place_order
from easel.storage import Storage

NAME = "acme"
PREFIX = "/acme/"
router = APIRouter(tags=["Acme"])
STATES: dict[str, str] = {
    OrderStatus.PENDING: "queued",
    OrderStatus.RUNNING: "working",
    OrderStatus.COMPLETED: "done",
    OrderStatus.FAILED: "error",
    OrderStatus.CANCELED: "error",
}


class JobBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    prompt: str
    size: str = "1024x1024"


class Job(BaseModel):
    id: str
    state: str
    images: list[str]


def job(order: Order, outputs: list[Output], storage: Storage) -> dict[str, Any]:
    return {
        "id": order.id,
        "state": STATES[order.status],
        "images": output_urls(order, outputs, storage),
    }


def error_response(exc: EaselError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status_code)


@router.post("/acme/v1/jobs", response_model=Job)
async def create(body: JobBody, account: CurrentAccount, state: State) -> dict[str, Any]:
    model = resolve_model(state.catalog, NAME, body.model, "model")
    try:
        width, height = (int(x) for x in body.size.split("x"))
    except ValueError:
        raise InvalidRequest(
            f"size must be WIDTHxHEIGHT, got {body.size!r}", param="size"
        ) from None
    req = build_request(
        state.settings,
        dialect=NAME,
        model=model,
        model_alias=body.model,
        product=state.catalog.products[state.catalog.image_product],
        prompt=body.prompt,
        width=width,
        height=height,
        body=body.model_dump(),
    )
    order, _ = await place_order(state, account, req)
    return job(order, [], state.storage)


@router.get("/acme/v1/jobs/{job_id}", response_model=Job)
async def query(
    job_id: str, account: CurrentAccount, session: ReadSessionDep, state: State
) -> dict[str, Any]:
    order = await reads.own_order(session, account.id, job_id, NAME)
    return job(order, await lifecycle.get_outputs(session, order.id), state.storage)


DIALECT = Dialect(
    name=NAME, router=router, callback_body=job, prefix=PREFIX, error_response=error_response
)
