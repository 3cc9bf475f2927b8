"""Seed 003, the OpenAI Images API: /v1/images/generations, /v1/images/edits and /v1/models.

A request waits for its order (up to EASEL_OPENAI_WAIT_TIMEOUT) and answers as OpenAI does. Every
error carries `x-should-retry: false`: the official SDK would otherwise resubmit, and pay again
for, a request that timed out while its order goes on.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from fastapi import Header, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from easel.api.deps import CurrentAccount, State, unless_client_leaves
from easel.api.errors import explain_validation
from easel.api.intake import api_router
from easel.api.state import AppState
from easel.catalog import Model
from easel.catalog.capabilities import (
    EDIT,
    IMAGE_TO_IMAGE,
    INPAINT,
    Need,
    describe,
    model_capabilities,
)
from easel.config import Settings
from easel.db.status import OrderStatus
from easel.db.tables import Account, Order, Output
from easel.dialects.base import Dialect
from easel.dialects.common import (
    attach_reference,
    check_reference_count,
    named_model,
    place,
    resolve_model,
)
from easel.dialects.native import native_webhook
from easel.dialects.openai_errors import (
    OpenAIError,
    WaitTimedOut,
    error_response,
    form_field_bytes,
)
from easel.errors import (
    EaselError,
    InvalidRequest,
    NotFound,
)
from easel.media.bodies import declared_over
from easel.media.masks import convert_mask
from easel.media.references import Reference, check_image
from easel.orders.request import (
    DialectData,
    GenerationRequest,
    build_request,
    parse_wxh,
    size_for_aspect,
)
from easel.orders.text import check_text
from easel.orders.waiting import wait_until_final
from easel.storage import Storage

PREFIX = "/v1/"


OPENAI_STATUSES = (400, 401, 403, 404, 409, 413, 429, 500, 503, 504)
router = api_router(OpenAIError, OPENAI_STATUSES, tags=["OpenAI Images (seed 003)"])
log = logging.getLogger(__name__)

NAME = "openai"
VIDEOS = "openai_videos"  # the Videos API (dialects/openai_videos.py) shares /v1/models
# quality -> a multiple of the model's default denoising steps (the price does not change)
QUALITY_STEPS = {"low": 0.5, "medium": 1.0, "standard": 1.0, "auto": 1.0, "high": 1.5, "hd": 1.5}
# style -> words added to the prompt (the order records the prompt the model was given)
STYLE_SUFFIXES = {"vivid": ", vivid colors, dramatic lighting, high contrast", "natural": ""}

SEED_003_EXAMPLE: dict[str, Any] = {
    "model": "qh-draw-x2-preview",
    "prompt": "A futuristic city skyline at dusk, cyberpunk style, neon lights reflecting on "
    "rain-slicked streets, cinematic quality",
    "size": "1280x720",
    "n": 1,
}


@dataclass(frozen=True)
class MaskInfo:
    width: int
    height: int
    bytes: int


@dataclass(frozen=True)
class OpenAIData(DialectData):
    """What the client asked that has no canonical field, kept with the order."""

    user: str | None = None
    quality: str | None = None
    style: str | None = None
    response_format: str | None = None
    mask: MaskInfo | None = None  # the mask's size and bytes (inpainting used it)


class OrderFailed(EaselError):
    """The order failed; its credits were refunded."""

    status_code = 500
    code = "generation_failed"


def _generations_schema(schema: dict[str, Any]) -> None:
    """Seed 003's example, and `model` required: optional in the model only so that its absence
    gets a message that lists the accepted names."""
    schema["examples"] = [SEED_003_EXAMPLE]
    schema["required"] = sorted({*schema.get("required", []), "model"})


class GenerationsBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_generations_schema)

    model: str | None = Field(default=None, description="Required: one of GET /v1/models")
    prompt: str = Field(description="What to draw, at most 2,500 characters")
    size: str | None = Field(
        default=None, description="WIDTHxHEIGHT, e.g. 1280x720 (multiples of 8), or auto"
    )
    n: int | None = Field(default=None, description="Images, default 1")
    response_format: Literal["url", "b64_json"] | None = Field(default=None, description="url")
    quality: Literal[tuple(QUALITY_STEPS)] | None = Field(  # type: ignore[valid-type]
        default=None, description="low: half the model's steps; high / hd: 1.5 times"
    )
    style: Literal["vivid", "natural"] | None = Field(
        default=None, description="vivid adds color and lighting words to the prompt"
    )
    output_format: str | None = Field(default=None, description="png (default), jpeg or webp")
    user: str | None = Field(default=None, description="Your end user's id, recorded")
    negative_prompt: str | None = Field(default=None, description="Easel extra")
    seed: int | None = Field(default=None, description="Easel extra: image k gets seed + k")


class EditFields(GenerationsBody):
    """The text fields of an edit; the files come as `image` (or `image[]`) and `mask`."""

    strength: float | None = Field(
        default=None, gt=0, le=1, description="Easel extra: how far from the image (0.8)"
    )


class OpenAIImage(BaseModel):
    """One image: `b64_json` or `url` as response_format asked; `revised_prompt` only when the
    prompt was enhanced."""

    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None
    nsfw_detected: bool | None = Field(
        default=None,
        description="Easel extra, only when the safety check ran: whether it flagged the image",
    )


class OpenAIImagesResponse(BaseModel):
    created: int = Field(description="Unix seconds")
    data: list[OpenAIImage]


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    capabilities: list[str] = Field(
        description="Easel extra: text_to_image / image_to_image / edit / inpaint / "
        "text_to_video / image_to_video"
    )
    max_references: int = Field(description="Easel extra: the most images an edit takes")
    credits: dict[str, int] = Field(description="Easel extra: credits per image, by level")
    max_seconds: int | None = Field(
        default=None, description="Easel extra: a video model's longest clip, in seconds"
    )
    credits_per_second: int | None = Field(
        default=None, description="Easel extra: a video model's price per second"
    )


class OpenAIModelList(BaseModel):
    object: Literal["list"]
    data: list[OpenAIModel]


def parse_size(settings: Settings, value: str | None, default: tuple[int, int]) -> tuple[int, int]:
    if value is None or value == "auto":
        return default
    return parse_wxh(settings, value, "1024x1024 or 1280x720, or auto")


def steps_for(settings: Settings, model: Model, quality: str | None) -> int:
    most = model.max_steps or settings.max_steps
    return min(most, max(1, round(model.steps * QUALITY_STEPS[quality or "auto"])))


def to_request(
    state: AppState,
    body: GenerationsBody,
    *,
    auto_size: tuple[int, int] | None = None,
    exact_size: tuple[int, int] | None = None,
    idempotency_key: str | None = None,
    body_hash: dict[str, Any] | None = None,
    mask: MaskInfo | None = None,
    model: Model | None = None,
) -> GenerationRequest:
    catalog, settings = state.catalog, state.settings
    model = model or model_for(state, body.model)
    if exact_size is not None:  # an inpainting: its image's size, checked by inpaint_size
        width, height = exact_size
    else:
        width, height = parse_size(settings, body.size, auto_size or (model.width, model.height))
    if body.user is not None and len(body.user) > settings.openai_max_user_chars:
        raise InvalidRequest(
            f"user is longer than {settings.openai_max_user_chars} characters", param="user"
        )
    req = build_request(
        settings,
        dialect=NAME,
        model=model,
        model_alias=str(body.model),
        product=catalog.products[catalog.image_product],
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        width=width,
        height=height,
        size_multiple=1 if exact_size is not None else 8,
        n=1 if body.n is None else body.n,
        steps=steps_for(settings, model, body.quality),
        seed=body.seed,
        output_format=body.output_format or "png",
        idempotency_key=idempotency_key,
        body=body.model_dump() | (body_hash or {}),
        dialect_data=OpenAIData(
            user=body.user,
            quality=body.quality,
            style=body.style,
            response_format=body.response_format,
            mask=mask,
        ),
    )
    suffix = STYLE_SUFFIXES[body.style] if body.style else ""
    return replace(req, prompt=req.prompt + suffix) if suffix else req


def model_for(state: AppState, name: str | None, need: Need | None = None) -> Model:
    if name is None:
        accepted = ", ".join(state.catalog.accepted(NAME))
        raise InvalidRequest(f"model is required; accepted: {accepted}", param="model")
    return resolve_model(state.catalog, NAME, name, "model", need)


def edit_need(images: int, mask: object) -> Need:
    """An edit with a mask inpaints; without one it edits by instruction where the name can,
    else redraws the image."""
    if mask is not None:
        return Need((INPAINT,), images, "mask")
    return Need((EDIT, IMAGE_TO_IMAGE), images, "image")


async def generate_and_wait(
    request: Request,
    state: AppState,
    account: Account,
    req: GenerationRequest,
    response_format: str | None,
) -> dict[str, Any]:
    settings = state.settings
    timeout = settings.openai_wait_timeout
    # The wait's place is taken before the order is placed: a full server answers 503, unpaid.
    async with state.feed.watch() as watch:
        order, _ = await place(state, account, req)
        state.feed.follow(watch, order.id)
        goes_on = (
            f"order {order.id} goes on and was charged once: read it with "
            f"GET {settings.base_url}/api/v1/status/{order.id} and the same key (or resend with "
            "the same Idempotency-Key header to wait again without paying twice)"
        )
        try:
            done = await unless_client_leaves(request, wait_until_final(watch, timeout))
        except PoolTimeout:  # placed and charged: a retry must not pay again (no x-should-retry)
            raise WaitTimedOut(f"the server is too busy to wait for the image; {goes_on}") from None
    if done is None and watch.closing:
        raise WaitTimedOut(f"the server is restarting; {goes_on}")
    if done is None:
        log.info("wait timed out", extra={"action": "openai_wait", "order_id": order.id})
        raise WaitTimedOut(
            f"the image was not ready within {timeout:g} s (EASEL_OPENAI_WAIT_TIMEOUT); {goes_on}"
        )
    if done.order is None:
        raise NotFound(f"no order {order.id}")
    order, outputs = done.order, done.outputs
    if order.status != OrderStatus.COMPLETED:
        failed = OrderFailed(
            f"order {order.id} {order.status}: {order.error_message or 'no reason given'}; "
            "its credits were refunded"
        )
        failed.code = order.error_code or order.status
        raise failed
    return await images_response(order, outputs, state.storage, response_format or "url")


async def images_response(
    order: Order, outputs: list[Output], storage: Storage, response_format: str
) -> dict[str, Any]:
    if order.outputs_swept:  # an idempotent replay of an old order
        raise NotFound(f"the images of order {order.id} expired and were deleted")
    data: list[dict[str, Any]] = []
    for output in outputs:
        if response_format == "b64_json":
            raw = await asyncio.to_thread(storage.get, output.storage_key)
            item: dict[str, Any] = {"b64_json": base64.b64encode(raw).decode("ascii")}
        else:
            item = {"url": storage.url(output.storage_key)}
        if order.enhanced_prompt:
            item["revised_prompt"] = order.enhanced_prompt
        if output.nsfw_score is not None:
            item["nsfw_detected"] = output.safety is not None
        data.append(item)
    finished = order.completed_at or order.created_at
    return {"created": int(finished.timestamp()), "data": data}


@router.post(
    "/v1/images/generations",
    summary="Create images (waits for them)",
    response_model=OpenAIImagesResponse,
    response_model_exclude_unset=True,
)
async def generations(
    body: GenerationsBody,
    request: Request,
    account: CurrentAccount,
    state: State,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    req = to_request(state, body, idempotency_key=idempotency_key)
    return await generate_and_wait(request, state, account, req, body.response_format)


EDITS_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image", "model", "prompt"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "mask": {"type": "string", "format": "binary"},
                        **EditFields.model_json_schema()["properties"],
                    },
                }
            }
        },
    }
}


async def read_form(request: Request, settings: Settings) -> FormData:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise InvalidRequest(
            "send the edit as multipart/form-data with the picture in the file field `image`",
            param="image",
        )
    files = settings.max_reference_images + 1  # the images and a mask
    declared = request.headers.get("content-length", "")
    if declared_over(declared, files * settings.reference_max_bytes + 1024**2):
        raise InvalidRequest(
            f"the upload is {declared} bytes; send at most {settings.max_reference_images} "
            f"image(s) and a mask of at most {settings.reference_max_bytes} bytes each",
            param="image",
        )
    try:
        return await request.form(max_files=files, max_part_size=form_field_bytes(settings))
    except HTTPException as exc:
        raise InvalidRequest(
            f"the multipart body was refused: {exc.detail}; send at most "
            f"{settings.max_reference_images} image(s) and one mask, and text fields of at most "
            f"{form_field_bytes(settings)} bytes",
            param="image",
        ) from None


async def read_image(settings: Settings, upload: UploadFile, param: str) -> Reference:
    data = await upload.read(settings.reference_max_bytes + 1)
    return await asyncio.to_thread(check_image, settings, data, param)


def parse_fields(fields: dict[str, Any]) -> EditFields:
    for name, value in fields.items():
        if name in EditFields.model_fields and not isinstance(value, str):
            raise InvalidRequest(f"{name} must be a text field, not a file", param=name)
        check_text(name, "a form field's name")
        if isinstance(value, str):
            check_text(value, name)
    try:
        return EditFields.model_validate(fields)
    except ValidationError as exc:
        raise explain_validation(RequestValidationError(exc.errors())) from None


@router.post(
    "/v1/images/edits",
    summary="Image-to-image (waits for the images)",
    openapi_extra=EDITS_OPENAPI,
    response_model=OpenAIImagesResponse,
    response_model_exclude_unset=True,
)
async def edits(
    request: Request,
    account: CurrentAccount,
    state: State,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    form = await read_form(request, state.settings)
    try:
        req, response_format = await edit_request(state, form, idempotency_key)
    finally:
        await form.close()
    return await generate_and_wait(request, state, account, req, response_format)


async def edit_request(
    state: AppState, form: FormData, idempotency_key: str | None
) -> tuple[GenerationRequest, str | None]:
    settings = state.settings
    files = ("image", "image[]", "mask")
    body = parse_fields({k: v for k, v in form.multi_items() if k not in files})
    images = form.getlist("image") + form.getlist("image[]")
    masks = form.getlist("mask")
    if len(masks) > 1:
        raise InvalidRequest(
            f"mask: {len(masks)} masks were sent; send one (for the first image)", param="mask"
        )
    mask = masks[0] if masks else None
    model = model_for(state, body.model, edit_need(len(images), mask))
    uploads = [i for i in images if isinstance(i, UploadFile)]
    if not images or len(uploads) < len(images):
        raise InvalidRequest(
            "image is required as a file upload (PNG, JPEG or WebP) in the field `image`",
            param="image",
        )
    references = [await read_image(settings, upload, "image") for upload in uploads]
    first = references[0]
    converted: Reference | None = None
    mask_info: MaskInfo | None = None
    if isinstance(mask, UploadFile):
        raw = await mask.read(settings.reference_max_bytes + 1)
        if len(raw) > settings.reference_max_bytes:
            raise InvalidRequest(
                f"mask is larger than {settings.reference_max_bytes} bytes", param="mask"
            )
        converted = await asyncio.to_thread(convert_mask, raw, first, "mask")
        mask_info = MaskInfo(width=first.width, height=first.height, bytes=len(raw))
    elif mask is not None:
        raise InvalidRequest("mask must be a file upload (PNG)", param="mask")
    exact = inpaint_size(settings, first, body.size) if converted is not None else None
    req = to_request(
        state,
        body,
        auto_size=None if exact else edit_size(model, references),
        exact_size=exact,
        idempotency_key=idempotency_key,
        body_hash={
            "image_sha256": [hashlib.sha256(r.data).hexdigest() for r in references],
            "mask_sha256": hashlib.sha256(converted.data).hexdigest() if converted else None,
        },
        mask=mask_info,
        model=model,
    )
    check_reference_count(settings, req, len(references), "image")
    req = attach_reference(
        settings, req, first, "image", body.strength, references[1:], converted is not None
    )
    return replace(req, mask=converted), body.response_format


def edit_size(model: Model, references: list[Reference]) -> tuple[int, int]:
    """`size=auto` without a mask: an edit follows the last image's aspect ratio, an
    image-to-image the first's."""
    first, last = references[0], references[-1]
    shape = last if EDIT in model_capabilities(model) else first
    return size_for_aspect(model, f"{shape.width}:{shape.height}", "size")


def inpaint_size(settings: Settings, image: Reference, size: str | None) -> tuple[int, int]:
    """An inpainting is made at its image's own size, so every unmasked pixel comes back as it
    was: an image outside the size limits, or a `size` other than the image's, is refused."""
    width, height = image.width, image.height
    lo, hi = settings.min_side, settings.max_side
    if not (lo <= width <= hi and lo <= height <= hi) or width * height > settings.max_pixels:
        raise InvalidRequest(
            f"image is {width}x{height} px; with a mask the image is edited at its own size, so "
            f"each side must be between {lo} and {hi} px and it at most {settings.max_pixels} "
            "pixels: resize the image and the mask alike",
            param="image",
        )
    if size not in (None, "auto", f"{width}x{height}"):
        raise InvalidRequest(
            f"size {size} differs from the image's, {width}x{height}; with a mask the output is "
            f"the image's size: send size=auto or {width}x{height}",
            param="size",
        )
    return width, height


def openai_names(state: AppState) -> list[str]:
    """The model names of OpenAI's APIs here: the Images API's, then the Videos API's."""
    names = list(state.catalog.accepted(NAME))
    return names + [n for n in state.catalog.accepted(VIDEOS) if n not in names]


def model_card(state: AppState, name: str) -> dict[str, Any]:
    dialect = NAME if name in state.catalog.accepted(NAME) else VIDEOS
    model = named_model(state.catalog, dialect, name, "model")
    info = describe(state.catalog, model, name)
    return {"id": name, "object": "model", "created": 0, "owned_by": "easel"} | {
        k: info[k]
        for k in ("capabilities", "max_references", "credits", "max_seconds", "credits_per_second")
    }


@router.get(
    "/v1/models",
    summary="The image and video models this API accepts",
    response_model=OpenAIModelList,
)
async def models(account: CurrentAccount, state: State) -> dict[str, Any]:
    cards = [model_card(state, n) for n in openai_names(state)]
    return {"object": "list", "data": cards}


@router.get("/v1/models/{model}", summary="One image or video model", response_model=OpenAIModel)
async def one_model(model: str, account: CurrentAccount, state: State) -> dict[str, Any]:
    accepted = openai_names(state)
    if model not in accepted:
        raise NotFound(f"no model {model!r}; accepted: {', '.join(accepted)}", param="model")
    return model_card(state, model)


# OpenAI Images has no callbacks; a webhook_url given there gets the native payload.
DIALECT = Dialect(
    name=NAME,
    router=router,
    callback_body=native_webhook,
    prefix=PREFIX,
    error_response=error_response,
)
