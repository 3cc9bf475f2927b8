"""Seed 001, KIE's Qwen Image API: /api/v1/qwen/generate and /api/v1/qwen/record-info."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from easel.api.deps import CurrentAccount, ReadSessionDep, State
from easel.api.dialects.common import own_order, resolve_model
from easel.errors import EaselError
from easel.orders import lifecycle
from easel.orders.payloads import kie_body
from easel.orders.request import build_request
from easel.orders.submit import place_order

PREFIX = "/api/v1/qwen/"
router = APIRouter(tags=["KIE Qwen Image (seed 001)"])

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
    safety_check: bool = Field(default=True, description="Recorded; the checker comes later")
    callBackUrl: str | None = Field(default=None, description="POSTed the record-info body")
    model: str = Field(default="qwen", description="Easel extra: a catalog model for this API")


def envelope(data: Any, msg: str = "success") -> dict[str, Any]:
    return {"code": 200, "msg": msg, "data": data}


def error_response(exc: EaselError) -> JSONResponse:
    return JSONResponse(
        {"code": exc.status_code, "msg": exc.message, "data": None}, status_code=exc.status_code
    )


@router.post("/api/v1/qwen/generate", summary="Create a Qwen Image task")
async def generate(body: QwenGenerateBody, account: CurrentAccount, state: State) -> Any:
    model = resolve_model(state.catalog, "kie", body.model, "model")
    width, height = IMAGE_SIZES[body.image_size]
    req = build_request(
        state.settings,
        dialect="kie",
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
        extra={"request": body.model_dump(exclude={"callBackUrl"}, exclude_none=True)},
    )
    order, _ = await place_order(
        state.db, state.catalog, state.settings, account, req, state.storage
    )
    return envelope({"taskId": order.id})


@router.get("/api/v1/qwen/record-info", summary="Query a Qwen Image task")
async def record_info(
    account: CurrentAccount,
    session: ReadSessionDep,
    state: State,
    taskId: str = Query(description="The taskId that generate returned"),
) -> Any:
    order = await own_order(session, account.id, taskId, "kie")
    outputs = await lifecycle.get_outputs(session, order.id)
    return kie_body(order, outputs, state.storage)
