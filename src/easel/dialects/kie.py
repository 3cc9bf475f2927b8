"""Seed 001, KIE's Qwen Image API: /api/v1/qwen/generate and /api/v1/qwen/record-info."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from easel.api.deps import CurrentAccount, ReadSessionDep, State
from easel.api.errors import NATIVE_STATUSES
from easel.api.intake import api_router
from easel.db.status import UNSUCCESSFUL, OrderStatus
from easel.db.tables import Order, Output
from easel.dialects.base import Dialect, iso_seconds, output_urls
from easel.dialects.common import place, resolve_model
from easel.errors import EaselError
from easel.orders import reads
from easel.orders.request import DialectData, build_request
from easel.storage import Storage

NAME = "kie"
PREFIX = "/api/v1/qwen/"


class KieError(BaseModel):
    """Seed 001's error envelope: `code` repeats the HTTP status."""

    code: int
    msg: str
    data: None = None


router = api_router(KieError, NATIVE_STATUSES, tags=["KIE Qwen Image (seed 001)"])

# Seed 001's image_size enum -> pixels (multiples of 16, as Qwen-Image's latents need).
IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "square": (1024, 1024),
    "square_hd": (1328, 1328),
    "portrait_4_3": (768, 1024),
    "portrait_3_2": (704, 1056),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_3_2": (1056, 704),
    "landscape_16_9": (1024, 576),
}
OUTPUT_FORMATS = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg"}
# How seed 001 shows a canonical status (DESIGN.md's table).
KIE_FLAGS: dict[str, int] = {
    OrderStatus.PENDING: 0,
    OrderStatus.RUNNING: 0,
    OrderStatus.COMPLETED: 1,
    OrderStatus.FAILED: 2,
    OrderStatus.CANCELED: 2,
}

SEED_001_EXAMPLE: dict[str, Any] = {
    "prompt": "A dragon flying over ancient mountains, digital art style",
    "image_size": "landscape_16_9",
    "num_inference_steps": 30,
    "guidance_scale": 7.5,
    "acceleration_level": "regular",
}


class QwenGenerateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [SEED_001_EXAMPLE]})

    prompt: str = Field(description="Image description (Chinese or English)")
    image_size: Literal[tuple(IMAGE_SIZES)] = "landscape_4_3"  # type: ignore[valid-type]
    num_inference_steps: int = Field(default=30, description="Quality/speed trade-off")
    guidance_scale: float = Field(default=7.5, description="CFG scale")
    seed: int | None = Field(default=None, description="Same seed + same prompt = same output")
    acceleration_level: Literal["none", "regular", "high"] = "none"
    output_format: Literal["png", "jpg", "jpeg"] = "png"
    safety_check: bool = Field(
        default=True,
        description="Check the outputs with the NSFW classifier (a plan may require it; "
        "docs/safety.md)",
    )
    callBackUrl: str | None = Field(default=None, description="POSTed the record-info body")
    model: str = Field(default="qwen", description="Easel extra: a catalog model for this API")


class KieTaskCreated(BaseModel):
    taskId: str


class KieCreated(BaseModel):
    code: int
    msg: str
    data: KieTaskCreated


class KieRecord(BaseModel):
    taskId: str
    model: str
    successFlag: int = Field(description="0 generating, 1 succeeded, 2 failed, 3 creation failed")
    progress: int
    imageUrl: str | None
    imageUrls: list[str]
    createTime: str | None
    completeTime: str | None
    expireTime: str | None
    param: dict[str, Any] = Field(description="The request as it came, less callBackUrl")
    nsfwDetected: list[bool] | None = Field(
        default=None,
        description="Easel extra, only when the safety check ran: per image, whether it flagged it",
    )
    errorCode: str | None = Field(default=None, description="Only when failed or canceled")
    errorMessage: str | None = Field(
        default=None, description="Only when failed or canceled, or once the image expired"
    )


class KieEnvelope(BaseModel):
    code: int
    msg: str
    data: KieRecord


class KieRecordInfo(KieRecord, KieEnvelope):
    """The envelope, then the record's fields again at the top level, as seed 001's example
    reads them (the bases in this order put `code`, `msg`, `data` first)."""


def envelope(data: Any, msg: str = "success") -> dict[str, Any]:
    return {"code": 200, "msg": msg, "data": data}


def error_response(exc: EaselError) -> JSONResponse:
    return JSONResponse(
        {"code": exc.status_code, "msg": exc.message, "data": None}, status_code=exc.status_code
    )


@dataclass(frozen=True)
class KieData(DialectData):
    """What record-info's `param` shows: the request as it came, less the callback URL."""

    request: dict[str, Any]


def creation_failed(order: Order) -> bool:
    """Seed 001's successFlag 3: no generation could be set up (no start, or no model)."""
    return order.status == OrderStatus.FAILED and (
        order.started_at is None or order.error_code == "model_unavailable"
    )


def kie_record(order: Order, outputs: list[Output], storage: Storage) -> dict[str, Any]:
    """Seed 001's record-info body."""
    urls = output_urls(order, outputs, storage)
    flag = 3 if creation_failed(order) else KIE_FLAGS[order.status]
    body: dict[str, Any] = {
        "taskId": order.id,
        "model": order.model_alias,
        "successFlag": flag,
        "progress": order.progress,
        "imageUrl": urls[0] if urls else None,
        "imageUrls": urls,
        "createTime": iso_seconds(order.created_at),
        "completeTime": iso_seconds(order.completed_at),
        "expireTime": iso_seconds(order.outputs_expire_at),
        "param": dict(KieData.stored(order).get("request", {})),
    }
    checked = sorted((o for o in outputs if o.nsfw_score is not None), key=lambda o: o.index)
    if urls and checked:
        body["nsfwDetected"] = [o.safety is not None for o in checked]
    if order.status in UNSUCCESSFUL:
        body["errorCode"] = order.error_code
        body["errorMessage"] = order.error_message
    if order.outputs_swept:
        body["errorMessage"] = f"the image expired at {iso_seconds(order.outputs_expire_at)}"
    return body


def kie_body(order: Order, outputs: list[Output], storage: Storage) -> dict[str, Any]:
    """record-info's response and callback: the `{code, msg, data}` envelope, with the record's
    fields repeated at the top level as seed 001's example shows them."""
    record = kie_record(order, outputs, storage)
    return {"code": 200, "msg": "success", "data": record, **record}


@router.post("/api/v1/qwen/generate", summary="Create a Qwen Image task", response_model=KieCreated)
async def generate(body: QwenGenerateBody, account: CurrentAccount, state: State) -> dict[str, Any]:
    model = resolve_model(state.catalog, "kie", body.model, "model")
    width, height = IMAGE_SIZES[body.image_size]
    req = build_request(
        state.settings,
        dialect=NAME,
        model=model,
        model_alias=body.model,
        product=state.catalog.products[state.catalog.image_product],
        prompt=body.prompt,
        width=width,
        height=height,
        n=1,
        steps=body.num_inference_steps,
        guidance=body.guidance_scale,
        seed=body.seed,
        acceleration=body.acceleration_level,
        output_format=OUTPUT_FORMATS[body.output_format],
        safety_check=body.safety_check,
        webhook_url=body.callBackUrl,
        webhook_param="callBackUrl",
        body=body.model_dump(),
        dialect_data=KieData(request=body.model_dump(exclude={"callBackUrl"}, exclude_none=True)),
    )
    order, _ = await place(state, account, req)
    return envelope({"taskId": order.id})


@router.get(
    "/api/v1/qwen/record-info",
    summary="Query a Qwen Image task",
    response_model=KieRecordInfo,
    response_model_exclude_unset=True,
)
async def record_info(
    account: CurrentAccount,
    session: ReadSessionDep,
    state: State,
    taskId: str = Query(description="The taskId that generate returned"),
) -> dict[str, Any]:
    order = await reads.own_order(session, account.id, taskId, NAME)
    return kie_body(*await reads.with_outputs(session, order), state.storage)


DIALECT = Dialect(
    name=NAME, router=router, callback_body=kie_body, prefix=PREFIX, error_response=error_response
)
