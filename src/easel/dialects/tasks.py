"""Seed 002, the task API: /api/v1/tasks/create and /api/v1/tasks/{task_id}."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from easel.api.deps import CurrentAccount, ReadSessionDep, State
from easel.api.intake import api_router
from easel.catalog import video as video_length
from easel.catalog.capabilities import EDIT, IMAGE_TO_IMAGE, IMAGE_TO_VIDEO, Need, makes_video
from easel.db.status import UNSUCCESSFUL, OrderStatus
from easel.db.tables import Order, Output
from easel.dialects.base import Dialect, output_urls
from easel.dialects.common import named_model, place, resolve_model, with_references
from easel.errors import EaselError, InvalidRequest, Unauthorized
from easel.ids import new_id
from easel.orders import reads
from easel.orders.request import DialectData, build_request, size_for_aspect
from easel.storage import Storage

NAME = "tasks"
PREFIX = "/api/v1/tasks/"


class TaskApiError(BaseModel):
    """Seed 002's failure: `code` 0 with HTTP 200 (401 with HTTP 401 for a bad key), the reason
    in `msg`."""

    code: int
    msg: str
    data: None = None


# Seed 002 separates "code: 0, business failure" from "HTTP 401": every refusal answers HTTP 200
# with code 0, except a missing or bad key (401), a rate limit (429, with Retry-After, so that
# clients and proxies back off) and a server too busy to take the request (503, nothing charged).
TRANSPORT_STATUSES = (401, 429, 503)
router = api_router(TaskApiError, TRANSPORT_STATUSES, tags=["task API (seed 002)"])
router.responses.pop("4XX", None)  # other refusals are HTTP 200 with code 0
router.responses["default"] = {
    "model": TaskApiError,
    "description": "A failure of the server itself (5xx), in the same shape",
}

SUBMITTED = "提交成功,等待生成"  # seed 002's message: submitted, waiting for generation
# How seed 002 shows a canonical status.
TASK_STATUS: dict[str, int] = {
    OrderStatus.PENDING: 1,
    OrderStatus.RUNNING: 2,
    OrderStatus.COMPLETED: 3,
    OrderStatus.FAILED: 4,
    OrderStatus.CANCELED: 4,
}
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
    image_urls: list[str] = Field(
        default_factory=list, description="Images to edit (up to 3), or a video's first frame"
    )
    aspect_ratio: str = Field(
        default="1:1",
        description=" / ".join(ASPECT_RATIOS),
        json_schema_extra={"enum": list(ASPECT_RATIOS)},
    )
    callback_url: str | None = Field(default=None, description="Easel extra: POSTed the task")
    seed: int | None = Field(
        default=None, description="Easel extra: the same seed and inputs make the same output"
    )


def error_response(exc: EaselError) -> JSONResponse:
    """Business failures are HTTP 200 with `code: 0` (seed 002); a bad key is HTTP 401."""
    body = {"code": 0, "msg": exc.message, "data": None}
    if isinstance(exc, Unauthorized):
        body["code"] = 401
    keep = exc.status_code in TRANSPORT_STATUSES or exc.status_code >= 500  # not the client's
    return JSONResponse(body, status_code=exc.status_code if keep else 200)


class TaskCreatedData(BaseModel):
    task_id: str
    request_id: str
    credits: int


class TaskCreated(BaseModel):
    code: int
    msg: str
    data: TaskCreatedData


class TaskError(BaseModel):
    code: str | None
    message: str | None


class TaskObject(BaseModel):
    task_id: str
    task_status: int = Field(description="1 submitted, 2 generating, 3 succeeded, 4 failed")
    task_type: Literal["image", "video"]
    model_id: str
    image_url: str | None
    image_urls: list[str]
    video_url: str | None
    audio_url: str | None
    credits: int
    progress: int
    created_at: int = Field(description="Unix seconds")
    completed_at: int | None = Field(description="Unix seconds")
    error: TaskError | None = Field(default=None, description="Only when failed or canceled")


class TaskQuery(BaseModel):
    code: int
    msg: str
    data: TaskObject


@dataclass(frozen=True)
class TaskData(DialectData):
    request_id: str  # seed 002's create response carries one


def task_data(order: Order, outputs: list[Output], storage: Storage) -> dict[str, Any]:
    """Seed 002's task object (`data` of GET /api/v1/tasks/{task_id})."""
    urls = output_urls(order, outputs, storage)
    video = order.task_type == "animation"
    body: dict[str, Any] = {
        "task_id": order.id,
        "task_status": TASK_STATUS[order.status],
        "task_type": "video" if video else "image",
        "model_id": order.model_alias,
        "image_url": None if video or not urls else urls[0],
        "image_urls": [] if video else urls,
        "video_url": urls[0] if video and urls else None,
        "audio_url": None,
        "credits": order.cost_credits,
        "progress": order.progress,
        "created_at": int(order.created_at.timestamp()),
        "completed_at": int(order.completed_at.timestamp()) if order.completed_at else None,
    }
    if order.status in UNSUCCESSFUL:
        body["error"] = {"code": order.error_code, "message": order.error_message}
    return body


def need(video: bool, image_urls: list[str]) -> Need:
    """Seed 002: `image_urls` are the images to edit, or a video's first frame."""
    if not image_urls:
        return Need.text(video)
    wanted = (IMAGE_TO_VIDEO,) if video else (EDIT, IMAGE_TO_IMAGE)
    return Need(wanted, len(image_urls), "image_urls")


@router.post(
    "/api/v1/tasks/create",
    summary="Create an image or video task",
    response_model=TaskCreated | TaskApiError,
    response_description="The task (code 200), or a business failure (code 0, with msg)",
)
async def create(body: CreateTaskBody, account: CurrentAccount, state: State) -> dict[str, Any]:
    catalog, settings = state.catalog, state.settings
    named = named_model(catalog, NAME, body.model_id, "model_id")
    if body.aspect_ratio not in ASPECT_RATIOS:
        raise InvalidRequest(
            f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}, got {body.aspect_ratio!r}",
            param="aspect_ratio",
        )
    animation = named.id == catalog.animation_model or makes_video(catalog, named)
    wanted = need(animation, body.image_urls)
    model = resolve_model(catalog, NAME, body.model_id, "model_id", wanted)
    product = catalog.products[catalog.video_product if animation else catalog.image_product]
    width, height = size_for_aspect(model, body.aspect_ratio)
    # No length field: the model's default clip, or the plan's longest when that is shorter.
    plan_longest = catalog.plans[account.plan].max_video_seconds
    seconds = None
    if animation and video_length.by_length(model) and 0 < plan_longest < model.seconds:
        seconds = plan_longest
    req = build_request(
        settings,
        dialect=NAME,
        model=model,
        model_alias=body.model_id,
        product=product,
        prompt=body.prompt,
        width=width,
        height=height,
        n=1,
        seed=body.seed,
        output_format="mp4" if animation else "png",
        webhook_url=body.callback_url,
        webhook_param="callback_url",
        body=body.model_dump(),
        dialect_data=TaskData(request_id=new_id("req", 16)),
        seconds=seconds,
    )
    req = await with_references(
        req,
        body.image_urls,
        "image_urls",
        state,
        size_from_images="aspect_ratio" not in body.model_fields_set,
    )
    order, _ = await place(state, account, req)
    data = {
        "task_id": order.id,
        "request_id": TaskData.stored(order)["request_id"],
        "credits": order.cost_credits,
    }
    return {"code": 200, "msg": SUBMITTED, "data": data}


@router.get(
    "/api/v1/tasks/{task_id}",
    summary="Query a task",
    response_model=TaskQuery | TaskApiError,
    response_description="The task (code 200), or a business failure (code 0, with msg)",
    response_model_exclude_unset=True,
)
async def query(
    task_id: str, account: CurrentAccount, session: ReadSessionDep, state: State
) -> dict[str, Any]:
    order = await reads.own_order(session, account.id, task_id, NAME)
    data = task_data(*await reads.with_outputs(session, order), state.storage)
    return {"code": 200, "msg": "ok", "data": data}


DIALECT = Dialect(
    name=NAME, router=router, callback_body=task_data, prefix=PREFIX, error_response=error_response
)
