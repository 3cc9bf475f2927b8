"""The OpenAI Videos API: /v1/videos (create, list), /v1/videos/{id} (read, delete) and
/v1/videos/{id}/content (the MP4, or its thumbnail).

A video is one order of a model that makes videos by length (catalog/video.py): `seconds` is its
length, `size` its WIDTHxHEIGHT, `input_reference` (an uploaded image, or `{"image_url": ...}` in
JSON) its first frame. Creating answers at once with the queued video; clients poll it (the
official SDK's `videos.create_and_poll`). Errors are OpenAI's shape, as in the Images API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from easel.api.deps import CurrentAccount, ReadSessionDep, State
from easel.api.errors import explain_validation
from easel.api.intake import api_router, parse_json_body
from easel.api.limits import is_json
from easel.api.state import AppState
from easel.catalog import video as video_length
from easel.catalog.capabilities import IMAGE_TO_VIDEO, Need
from easel.clock import utcnow
from easel.config import Settings
from easel.db.status import FINAL, OrderStatus
from easel.db.tables import Account, Order, Output
from easel.dialects.base import Dialect
from easel.dialects.common import attach_reference, place, resolve_model, with_references
from easel.dialects.openai_errors import OpenAIError, error_response, form_field_bytes
from easel.errors import Conflict, InvalidRequest, NotFound
from easel.media.bodies import declared_over
from easel.media.references import check_image
from easel.media.video import poster_key
from easel.orders import lifecycle, reads, retention
from easel.orders.request import DialectData, GenerationRequest, build_request, parse_wxh
from easel.orders.text import check_text
from easel.storage import MissingObject, Storage

NAME = "openai_videos"
PREFIX = "/v1/videos"
router = api_router(
    OpenAIError, (400, 401, 403, 404, 409, 413, 429, 500, 503), tags=["OpenAI Videos"]
)

STATUSES: dict[str, str] = {
    OrderStatus.PENDING: "queued",
    OrderStatus.RUNNING: "in_progress",
    OrderStatus.COMPLETED: "completed",
    OrderStatus.FAILED: "failed",
    OrderStatus.CANCELED: "failed",
}
DEFAULT_MODEL = "sora-2"  # OpenAI's default
DEFAULT_SECONDS = "4"
DEFAULT_SIZE = "720x1280"


class ImageReference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_url: str | None = Field(default=None, description="An http(s) URL or a data URL")
    file_id: str | None = Field(default=None, description="Not supported: upload the image")


class CreateVideoBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="What the video shows")
    model: str = Field(default=DEFAULT_MODEL, description="sora-2 or seedance-2 (GET /v1/models)")
    seconds: str | None = Field(
        default=None,
        description="Length in whole seconds (default 4), up to the model's and the plan's",
    )
    size: str = Field(default=DEFAULT_SIZE, description="WIDTHxHEIGHT, e.g. 1280x720 or 720x1280")
    input_reference: ImageReference | None = Field(
        default=None, description="The first frame (multipart: an image file)"
    )
    negative_prompt: str | None = Field(default=None, description="Easel extra")
    seed: int | None = Field(default=None, description="Easel extra: the same seed, the same video")


class VideoError(BaseModel):
    code: str
    message: str


class Video(BaseModel):
    id: str
    object: Literal["video"]
    model: str
    status: Literal["queued", "in_progress", "completed", "failed"]
    progress: int = Field(description="0-100")
    created_at: int = Field(description="Unix seconds")
    completed_at: int | None
    expires_at: int | None = Field(description="When the video and its thumbnail are deleted")
    prompt: str
    seconds: str
    size: str
    remixed_from_video_id: None = None
    error: VideoError | None


class VideoList(BaseModel):
    object: Literal["list"]
    data: list[Video]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"]
    deleted: bool


@dataclass(frozen=True)
class VideoData(DialectData):
    seconds: str
    deleted: bool | None = None


def video(order: Order) -> dict[str, Any]:
    """The video object: status body and callback body alike (the files are read through
    /content, so it names none)."""
    failed = order.status in (OrderStatus.FAILED, OrderStatus.CANCELED)
    return {
        "id": order.id,
        "object": "video",
        "model": order.model_alias,
        "status": STATUSES[order.status],
        "progress": 100 if order.status == OrderStatus.COMPLETED else order.progress,
        "created_at": int(order.created_at.timestamp()),
        "completed_at": int(order.completed_at.timestamp()) if order.completed_at else None,
        "expires_at": int(order.outputs_expire_at.timestamp()) if order.outputs_expire_at else None,
        "prompt": order.prompt,
        "seconds": VideoData.stored(order).get("seconds", ""),
        "size": f"{order.width}x{order.height}",
        "remixed_from_video_id": None,
        "error": (
            {"code": order.error_code or order.status, "message": order.error_message or ""}
            if failed
            else None
        ),
    }


def parse_seconds(value: str) -> int:
    if re.fullmatch(r"[0-9]{1,4}", value) is None or int(value) < 1:
        raise InvalidRequest(
            f"seconds must be a whole number of seconds such as 4, got {value!r}", param="seconds"
        )
    return int(value)


def to_request(
    state: AppState, body: CreateVideoBody, first_frame: bool, extra: dict[str, Any]
) -> GenerationRequest:
    catalog = state.catalog
    need = Need((IMAGE_TO_VIDEO,), 1, "input_reference") if first_frame else Need.text(video=True)
    model = resolve_model(catalog, NAME, body.model, "model", need)
    width, height = parse_wxh(state.settings, body.size, "1280x720 or 720x1280")
    seconds: int | None = parse_seconds(body.seconds or DEFAULT_SECONDS)
    if body.seconds is None and not video_length.by_length(model):
        seconds = None  # a provider's fixed-length clip (Seedance with its key set)
    product = catalog.products[catalog.video_product]
    length = seconds or round(product.frames / model.fps)
    return build_request(
        state.settings,
        dialect=NAME,
        model=model,
        model_alias=body.model,
        product=product,
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        width=width,
        height=height,
        n=1,
        seed=body.seed,
        output_format="mp4",
        body=body.model_dump() | extra,
        dialect_data=VideoData(seconds=str(length)),
        seconds=seconds,
    )


async def read_form(request: Request, state: AppState) -> FormData | None:
    """The multipart/form-data body (the SDK's way), or None for JSON."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        declared = request.headers.get("content-length", "")
        limit = state.settings.reference_max_bytes + 1024**2
        if declared_over(declared, limit):
            raise InvalidRequest(
                f"the upload is {declared} bytes; send an input_reference of at most "
                f"{state.settings.reference_max_bytes} bytes",
                param="input_reference",
            )
        field_bytes = form_field_bytes(state.settings)
        try:
            return await request.form(max_files=1, max_part_size=field_bytes)
        except HTTPException as exc:
            raise InvalidRequest(
                f"the multipart body was refused: {exc.detail}; send one input_reference file "
                f"and text fields of at most {field_bytes} bytes"
            ) from None
    return None


async def read_body(
    request: Request, form: FormData | None, settings: Settings
) -> tuple[CreateVideoBody, UploadFile | None]:
    """The fields, and the first frame when it was uploaded as a file."""
    if form is not None:
        fields: dict[str, Any] = {}
        upload = None
        for name, value in form.multi_items():
            check_text(name, "a form field's name")
            if name in fields or (name == "input_reference" and upload is not None):
                raise InvalidRequest(f"{name} is given more than once; send it once", param=name)
            if isinstance(value, UploadFile):
                if name != "input_reference":
                    raise InvalidRequest(f"{name} must be a text field, not a file", param=name)
                upload = value
            else:
                fields[name] = check_text(value, name)
        return validated(fields), upload
    if not is_json(request.headers.get("content-type", "")):
        raise InvalidRequest("send JSON, or multipart/form-data with input_reference as a file")
    raw = parse_json_body(await request.body(), settings)  # UTF-8, members, depth, text
    if not isinstance(raw, dict):
        raise InvalidRequest("the body must be a JSON object")
    return validated(raw), None


def validated(fields: dict[str, Any]) -> CreateVideoBody:
    try:
        return CreateVideoBody.model_validate(fields)
    except ValidationError as exc:
        raise explain_validation(RequestValidationError(exc.errors())) from None


async def create_request(
    state: AppState, body: CreateVideoBody, upload: UploadFile | None
) -> GenerationRequest:
    settings = state.settings
    given = body.input_reference
    if given is not None and given.file_id is not None:
        raise InvalidRequest(
            "input_reference.file_id: this server keeps no files; upload the image as "
            "input_reference or give input_reference.image_url",
            param="input_reference",
        )
    url = given.image_url if given is not None else None
    if upload is None and url is None:
        return to_request(state, body, first_frame=False, extra={})
    if upload is None:
        req = to_request(state, body, first_frame=True, extra={})
        return await with_references(req, [str(url)], "input_reference", state)
    data = await upload.read(settings.reference_max_bytes + 1)
    reference = await asyncio.to_thread(check_image, settings, data, "input_reference")
    digest = {"input_reference_sha256": hashlib.sha256(reference.data).hexdigest()}
    req = to_request(state, body, first_frame=True, extra=digest)
    return attach_reference(settings, req, reference, "input_reference")


CREATE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": CreateVideoBody.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["prompt"],
                    "properties": {
                        **{
                            k: v
                            for k, v in CreateVideoBody.model_json_schema()["properties"].items()
                            if k != "input_reference"
                        },
                        "input_reference": {"type": "string", "format": "binary"},
                    },
                }
            },
        },
    }
}


@router.post(
    "/v1/videos", summary="Create a video", openapi_extra=CREATE_OPENAPI, response_model=Video
)
async def create(request: Request, account: CurrentAccount, state: State) -> dict[str, Any]:
    form = await read_form(request, state)
    try:
        body, upload = await read_body(request, form, state.settings)
        req = await create_request(state, body, upload)
    finally:
        if form is not None:
            await form.close()
    order, _ = await place(state, account, req)
    return video(order)


async def own_video(session: Any, account: Account, video_id: str) -> Order:
    order = await reads.own_order(session, account.id, video_id, NAME)
    if VideoData.stored(order).get("deleted"):
        raise NotFound(f"no video {video_id}: it was deleted", param="video_id")
    return order


@router.get("/v1/videos", summary="List videos, newest first", response_model=VideoList)
async def list_videos(
    account: CurrentAccount,
    session: ReadSessionDep,
    state: State,
    limit: Annotated[int, Query(ge=1)] = 20,
    after: Annotated[str | None, Query(description="a video id: list the ones after it")] = None,
    order: Annotated[Literal["desc"], Query(description="newest first")] = "desc",
) -> dict[str, Any]:
    limit = min(limit, state.settings.orders_page_max)
    page = await reads.list_orders(
        session,
        account.id,
        limit=limit,
        before=after,
        dialect=NAME,
        unless_flagged="deleted",
        outputs=False,
    )
    data = [video(o) for o, _ in page.orders]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": page.next_before is not None,
    }


@router.get("/v1/videos/{video_id}", summary="Read a video", response_model=Video)
async def retrieve(
    video_id: str, account: CurrentAccount, session: ReadSessionDep, state: State
) -> dict[str, Any]:
    return video(await own_video(session, account, video_id))


@router.get(
    "/v1/videos/{video_id}/content",
    summary="Download the video (MP4) or its thumbnail (JPEG)",
    response_class=Response,
    responses={
        200: {
            "description": "The MP4 (variant=video) or its first frame as a JPEG (thumbnail)",
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in ("video/mp4", "image/jpeg")
            },
        }
    },
)
async def content(
    video_id: str,
    account: CurrentAccount,
    session: ReadSessionDep,
    state: State,
    variant: Annotated[Literal["video", "thumbnail", "spritesheet"], Query()] = "video",
) -> Response:
    order, outputs = await reads.with_outputs(session, await own_video(session, account, video_id))
    if variant == "spritesheet":
        raise InvalidRequest(
            "variant spritesheet is not made on this server; ask for video or thumbnail",
            param="variant",
        )
    if order.status != OrderStatus.COMPLETED:
        raise Conflict(
            f"video {video_id} is {STATUSES[order.status]}; download it once it is completed"
        )
    if order.outputs_swept or not outputs:
        raise NotFound(f"the files of video {video_id} expired and were deleted")
    key = outputs[0].storage_key
    media = outputs[0].content_type
    if variant == "thumbnail":
        key, media = poster_key(key), "image/jpeg"
    try:
        data = await asyncio.to_thread(state.storage.get, key)
    except MissingObject:
        raise NotFound(f"video {video_id} has no {variant} on this server") from None
    return Response(content=data, media_type=media)


@router.delete("/v1/videos/{video_id}", summary="Delete a video", response_model=VideoDeleted)
async def delete(video_id: str, account: CurrentAccount, state: State) -> dict[str, Any]:
    """A queued video is canceled and refunded, a running one stops at its next step; the files
    of a finished one are deleted once that is committed (a stopped one's at its expiry, as any
    order's)."""
    keys: list[str] = []
    async with state.db.transaction() as session:
        order = await own_video(session, account, video_id)
        if order.status not in FINAL:
            # Conflict: finished since it was read; cancel's locked read refreshed `order`.
            with contextlib.suppress(Conflict):
                order = await lifecycle.cancel(session, account.id, order.id, utcnow())
        if order.status in FINAL and not order.outputs_swept:
            keys = retention.stored_keys(order, await lifecycle.get_outputs(session, order.id))
            order.outputs_swept = True
        order.dialect_data = {**VideoData.stored(order), "deleted": True}
    await retention.delete_keys(state.storage, keys)
    return {"id": video_id, "object": "video.deleted", "deleted": True}


def callback_body(order: Order, _outputs: list[Output], _storage: Storage) -> dict[str, Any]:
    return video(order)


DIALECT = Dialect(
    name=NAME,
    router=router,
    callback_body=callback_body,
    prefix=PREFIX,
    error_response=error_response,
)
