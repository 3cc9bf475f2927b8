"""Seed 004, kirin_v2_image: /kirin/v1/images/generations, by task id or external_task_id."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from easel.api.deps import CurrentAccount, ReadSessionDep, State
from easel.api.errors import NATIVE_STATUSES
from easel.api.intake import api_router
from easel.catalog.capabilities import EDIT, IMAGE_TO_IMAGE, Need
from easel.db.status import UNSUCCESSFUL, OrderStatus
from easel.db.tables import Order, Output
from easel.dialects.base import Dialect, iso_seconds, output_urls
from easel.dialects.common import place, resolve_model, with_references
from easel.errors import EaselError, InvalidRequest
from easel.orders import reads
from easel.orders.request import build_request, size_for_aspect
from easel.storage import Storage

NAME = "kirin"
PREFIX = "/kirin/"
CALLS_BACK_ON_START = True  # seed 004: a callback on every status change


class KirinErrorDetail(BaseModel):
    code: str
    error_message: str
    param: str | None = None


class KirinError(BaseModel):
    error: KirinErrorDetail


router = api_router(KirinError, NATIVE_STATUSES, tags=["kirin (seed 004)"])

ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9")
MAX_N = 9
MAX_EXTERNAL_ID = 128
# How seed 004 shows a canonical status.
KIRIN_STATUS: dict[str, str] = {
    OrderStatus.PENDING: "submitted",
    OrderStatus.RUNNING: "processing",
    OrderStatus.COMPLETED: "completed",
    OrderStatus.FAILED: "failed",
    OrderStatus.CANCELED: "failed",
}

SEED_004_EXAMPLE: dict[str, Any] = {
    "model": "kirin_v2_image",
    "prompt": "a lighthouse on a cliff at dawn, oil painting",
    "negative_prompt": "blurry, low quality",
    "n": 2,
    "aspect_ratio": "16:9",
    "external_task_id": "my-task-0001",
}


class KirinBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [SEED_004_EXAMPLE]})

    model: str = Field(description="kirin_v2_image")
    prompt: str = Field(description="At most 2,500 characters")
    image: str | None = Field(
        default=None, description="Reference image: a URL or a raw base64 string (no data: prefix)"
    )
    negative_prompt: str | None = Field(default=None, description="At most 2,500 characters")
    n: int = Field(
        default=1, description="1 to 9", json_schema_extra={"minimum": 1, "maximum": MAX_N}
    )
    aspect_ratio: str = Field(
        default="16:9",
        description=" / ".join(ASPECT_RATIOS),
        json_schema_extra={"enum": list(ASPECT_RATIOS)},
    )
    callback_url: str | None = Field(default=None, description="POSTed on every status change")
    external_task_id: str | None = Field(
        default=None,
        description="Your id, unique per account",
        json_schema_extra={"minLength": 1, "maxLength": MAX_EXTERNAL_ID},
    )


class KirinTaskError(BaseModel):
    code: str | None
    error_message: str | None


class KirinContent(BaseModel):
    type: Literal["image"]
    url: str


class KirinOutput(BaseModel):
    content: list[KirinContent]
    jobId: str


class KirinUsage(BaseModel):
    images: int
    credits: int


class KirinTask(BaseModel):
    task_id: str
    external_task_id: str | None
    model: str
    status: Literal["submitted", "processing", "completed", "failed"]
    progress: int
    created_at: str | None
    completed_at: str | None
    error: KirinTaskError | None = Field(default=None, description="Only when failed")
    output: KirinOutput | None = Field(default=None, description="Only when completed")
    usage: KirinUsage | None = Field(default=None, description="Only when completed")
    outputs_expired: bool | None = Field(
        default=None, description="Only when completed and the images were deleted: true"
    )


def error_response(exc: EaselError) -> JSONResponse:
    error: dict[str, Any] = {"code": exc.code, "error_message": exc.message}
    if exc.param:
        error["param"] = exc.param
    return JSONResponse({"error": error}, status_code=exc.status_code)


def kirin_task(order: Order, outputs: list[Output], storage: Storage) -> dict[str, Any]:
    """Seed 004's task: `error` only when failed, `output` and `usage` only when completed."""
    body: dict[str, Any] = {
        "task_id": order.id,
        "external_task_id": order.external_task_id,
        "model": order.model_alias,
        "status": KIRIN_STATUS[order.status],
        "progress": order.progress,
        "created_at": iso_seconds(order.created_at),
        "completed_at": iso_seconds(order.completed_at),
    }
    if order.status in UNSUCCESSFUL:
        body["error"] = {"code": order.error_code, "error_message": order.error_message}
    elif order.status == OrderStatus.COMPLETED:
        urls = output_urls(order, outputs, storage)
        body["output"] = {
            "content": [{"type": "image", "url": url} for url in urls],
            "jobId": order.id,
        }
        body["usage"] = {"images": len(outputs), "credits": order.cost_credits}
        if order.outputs_swept:
            body["outputs_expired"] = True
    return body


@router.post(
    "/kirin/v1/images/generations",
    summary="Create an image task",
    response_model=KirinTask,
    response_model_exclude_unset=True,
)
async def create(body: KirinBody, account: CurrentAccount, state: State) -> dict[str, Any]:
    refs = [body.image] if body.image else []
    need = Need((EDIT, IMAGE_TO_IMAGE), len(refs), "image") if refs else None
    model = resolve_model(state.catalog, "kirin", body.model, "model", need)
    if not 1 <= body.n <= MAX_N:
        raise InvalidRequest(f"n must be between 1 and {MAX_N}, got {body.n}", param="n")
    if body.aspect_ratio not in ASPECT_RATIOS:
        raise InvalidRequest(
            f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}, got {body.aspect_ratio!r}",
            param="aspect_ratio",
        )
    external = body.external_task_id
    if external is not None and not 0 < len(external) <= MAX_EXTERNAL_ID:
        raise InvalidRequest(
            f"external_task_id must be 1 to {MAX_EXTERNAL_ID} characters", param="external_task_id"
        )
    width, height = size_for_aspect(model, body.aspect_ratio)
    req = build_request(
        state.settings,
        dialect=NAME,
        webhook_on_start=CALLS_BACK_ON_START,
        model=model,
        model_alias=body.model,
        product=state.catalog.products[state.catalog.image_product],
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        width=width,
        height=height,
        n=body.n,
        webhook_url=body.callback_url,
        webhook_param="callback_url",
        external_task_id=external,
        body=body.model_dump(),
    )
    req = await with_references(
        req,
        refs,
        "image",
        state,
        allow_data_url=False,
        size_from_images="aspect_ratio" not in body.model_fields_set,
    )
    order, _ = await place(state, account, req)
    return kirin_task(order, [], state.storage)


@router.get(
    "/kirin/v1/images/generations/{task_id}",
    summary="Query a task by its id",
    response_model=KirinTask,
    response_model_exclude_unset=True,
)
async def query(
    task_id: str, account: CurrentAccount, session: ReadSessionDep, state: State
) -> dict[str, Any]:
    order = await reads.own_order(session, account.id, task_id, NAME)
    return kirin_task(*await reads.with_outputs(session, order), state.storage)


@router.get(
    "/kirin/v1/images/generations",
    summary="Find a task by your external_task_id",
    response_model=KirinTask,
    response_model_exclude_unset=True,
)
async def find(
    account: CurrentAccount,
    session: ReadSessionDep,
    state: State,
    external_task_id: str = Query(description="The external_task_id you created the task with"),
) -> dict[str, Any]:
    order = await reads.find_by_external_id(session, account.id, NAME, external_task_id)
    return kirin_task(*await reads.with_outputs(session, order), state.storage)


DIALECT = Dialect(
    name=NAME,
    router=router,
    callback_body=kirin_task,
    prefix=PREFIX,
    error_response=error_response,
)
