"""Seed 002, the task API: /api/v1/tasks/create and /api/v1/tasks/{task_id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from easel.api.deps import CurrentAccount, ReadSessionDep, State
from easel.api.dialects.common import own_order, resolve_model, with_references
from easel.errors import EaselError, InvalidRequest, Unauthorized
from easel.ids import new_id
from easel.orders import lifecycle
from easel.orders.payloads import task_data
from easel.orders.request import build_request, size_for_aspect
from easel.orders.submit import place_order

PREFIX = "/api/v1/tasks/"
router = APIRouter(tags=["task API (seed 002)"])

SUBMITTED = "提交成功,等待生成"  # seed 002's message: submitted, waiting for generation
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9")

SEED_002_EXAMPLE: dict[str, Any] = {
    "model_id": "gpt-image-2",
    "prompt": "a serene zen garden at sunrise, ultra detailed",
    "image_urls": [],
    "aspect_ratio": "16:9",
}


class CreateTaskBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [SEED_002_EXAMPLE]})

    model_id: str = Field(description="gpt-image-2 / nano-banana-2 (images), seedance-2 (video)")
    prompt: str
    image_urls: list[str] = Field(default_factory=list, description="Reference image URL")
    aspect_ratio: str = Field(default="1:1", description=" / ".join(ASPECT_RATIOS))
    callback_url: str | None = Field(default=None, description="Easel extra: POSTed the task")


def error_response(exc: EaselError) -> JSONResponse:
    """Business failures are `code: 0` (seed 002); a bad key is HTTP 401."""
    body = {"code": 0, "msg": exc.message, "data": None}
    if isinstance(exc, Unauthorized):
        body["code"] = 401
    return JSONResponse(body, status_code=exc.status_code)


@router.post("/api/v1/tasks/create", summary="Create an image or video task")
async def create(body: CreateTaskBody, account: CurrentAccount, state: State) -> Any:
    catalog, settings = state.catalog, state.settings
    model = resolve_model(catalog, "tasks", body.model_id, "model_id")
    if body.aspect_ratio not in ASPECT_RATIOS:
        raise InvalidRequest(
            f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}, got {body.aspect_ratio!r}",
            param="aspect_ratio",
        )
    animation = model.id == catalog.animation_model
    product = catalog.products[catalog.video_product if animation else catalog.image_product]
    width, height = size_for_aspect(model, body.aspect_ratio)
    req = build_request(
        settings,
        dialect="tasks",
        model=model,
        model_alias=body.model_id,
        product=product,
        prompt=body.prompt,
        width=width,
        height=height,
        n=1,
        output_format="mp4" if animation else "png",
        webhook_url=body.callback_url,
        webhook_param="callback_url",
        body=body.model_dump(),
        extra={"request_id": new_id("req", 16)},
    )
    req = await with_references(req, body.image_urls, "image_urls", state)
    order, _ = await place_order(state.db, catalog, settings, account, req, state.storage)
    data = {
        "task_id": order.id,
        "request_id": order.extra["request_id"],
        "credits": order.cost_credits,
    }
    return {"code": 200, "msg": SUBMITTED, "data": data}


@router.get("/api/v1/tasks/{task_id}", summary="Query a task")
async def query(
    task_id: str, account: CurrentAccount, session: ReadSessionDep, state: State
) -> Any:
    order = await own_order(session, account.id, task_id, "tasks")
    outputs = await lifecycle.get_outputs(session, order.id)
    return {"code": 200, "msg": "ok", "data": task_data(order, outputs, state.storage)}
