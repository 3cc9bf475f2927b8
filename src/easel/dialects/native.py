"""Seed 000, the native API: /api/v1/generate, /status, orders, cancel, account, plans."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from fastapi import Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from easel.accounts import ledger
from easel.api.deps import (
    CurrentAccount,
    ReadSessionDep,
    SessionDep,
    State,
    unless_client_leaves,
)
from easel.api.errors import NATIVE_STATUSES, NativeError
from easel.api.intake import api_router
from easel.api.state import AppState
from easel.catalog import Catalog, Model
from easel.catalog.capabilities import (
    EDIT,
    IMAGE_TO_IMAGE,
    IMAGE_TO_VIDEO,
    Need,
    describe,
    refusal,
)
from easel.clock import iso, utcnow
from easel.config import Settings
from easel.db.status import FINAL, UNSUCCESSFUL, OrderStatus
from easel.db.tables import Account, Order, Output
from easel.dialects.base import Dialect, output_urls
from easel.dialects.common import place, with_references
from easel.errors import InvalidRequest
from easel.orders import attempts, lifecycle, queue, reads
from easel.orders.changes import Watch
from easel.orders.request import GenerationRequest, build_request
from easel.orders.serving import LOADING_MODEL, WAITING_FOR_WORKER, waiting_message
from easel.storage import Storage
from easel.webhooks import endpoints

NAME = "native"
router = api_router(NativeError, NATIVE_STATUSES, tags=["native (seed 000)"])

SEED_000_EXAMPLE: dict[str, Any] = {
    "style": "guofeng",
    "product_type": "static_image",
    "prompt": "a warrior in red standing in bamboo forest holding a sword, ink wash painting style",
    "width": 768,
    "height": 1152,
    "llm_enhance": True,
    "webhook_url": "https://your-app.com/callback",
}


class NativeLoraIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="An installed LoRA (catalog [loras.NAME])")
    url: str | None = Field(
        default=None, description="Plans with allow_lora_urls: the .safetensors file's URL"
    )
    sha256: str | None = Field(default=None, description="With url: the file's SHA-256 (hex)")
    scale: float | None = Field(
        default=None, description="-2 to 2; default the LoRA's own (1.0 for a URL)"
    )


class GenerateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [SEED_000_EXAMPLE]})

    style: str = Field(
        description="guofeng / anime / realistic / general / turbo / zanime / zimage"
    )
    product_type: str = Field(
        default="static_image",
        description="static_image / batch_4 / batch_8 / animation_16f / 24f / 32f",
    )
    prompt: str = Field(description="Positive prompt (Chinese or English)")
    negative_prompt: str | None = None
    width: int = 768
    height: int = 1152
    llm_enhance: bool = False
    safety_check: bool = Field(
        default=True,
        description="Easel extra: false skips the output safety check where the plan allows it "
        "(safety_optional) and the operator has not forced it (EASEL_SAFETY_FORCE)",
    )
    webhook_url: str | None = Field(default=None, description="POSTed on completion or failure")
    seed: int | None = Field(default=None, description="Easel extra: reproducible output")
    steps: int | None = Field(default=None, description="Easel extra: denoising steps")
    guidance_scale: float | None = Field(default=None, description="Easel extra: CFG scale")
    output_format: str = Field(
        default="png",
        description="Easel extra: png / jpeg / webp; animations mp4 (default) / gif / webp",
    )
    image: str | None = Field(
        default=None,
        description="Easel extra: reference image (URL, base64 or data URL) for image-to-image",
    )
    strength: float | None = Field(
        default=None, description="Easel extra: image-to-image strength, (0, 1], default 0.8"
    )
    image_urls: list[str] | None = Field(
        default=None,
        description="Easel extra: images to edit by instruction (URLs, base64 or data URLs), up "
        "to the style's max_references; the output follows the last one's aspect ratio unless "
        "width and height are given. Not with `image`",
    )
    loras: list[NativeLoraIn] | None = Field(
        default=None,
        description="Easel extra: LoRAs added to the style's own, up to the plan's max_loras",
    )


class NativeCreated(BaseModel):
    ok: bool
    order_id: str
    status: OrderStatus
    product_type: str
    style: str
    priority: int
    cost: int


class NativeOutput(BaseModel):
    url: str
    seed: int
    width: int
    height: int
    content_type: str
    nsfw_detected: bool | None = Field(
        default=None, description="Only when the safety check ran: whether it scored NSFW"
    )
    nsfw_score: float | None = Field(
        default=None, description="Only when the safety check ran: its score, 0 (safe) to 1"
    )
    safety: str | None = Field(
        default=None, description="Only when it scored NSFW: flagged, blurred or released"
    )


class NativeEnhance(BaseModel):
    status: str = Field(description="done, or skipped (the original prompt was used)")
    reason: str | None = Field(default=None, description="Only when skipped: why")
    negative_prompt: str | None = Field(
        default=None, description="The negative prompt the enhancer suggested"
    )


class NativeLora(BaseModel):
    name: str | None = None
    url: str | None = None
    sha256: str | None = None
    scale: float


class NativeOrderError(BaseModel):
    code: str | None
    message: str | None


class NativeLoading(BaseModel):
    model: str
    bytes_done: int | None = Field(description="While downloading: bytes so far; null: from disk")
    bytes_total: int | None


class NativeRouteAttempt(BaseModel):
    """One try of an upstream order; the fields after `state` only in the operator's view."""

    number: int
    channel: str
    provider: str
    state: str = Field(
        description="submitting, accepted, succeeded, refused (the channel's fault), rejected "
        "(this request's), unbilled, failed, canceled, lost or handed_off (to a local model)"
    )
    remote_id: str | None = Field(default=None, description="The provider's job id")
    remote_status: str | None = Field(default=None, description="The provider's own word")
    queue_position: int | None = None
    cost: float | None = Field(default=None, description="What the operator pays for it")
    latency_ms: int | None = None
    retry_after: float | None = None
    error: str | None = None
    outputs: list[str] | None = Field(default=None, description="The provider's output URLs")
    worker_id: str | None = None
    created_at: str | None = None
    finished_at: str | None = None


class NativeRoute(BaseModel):
    """The route an upstream order took: shown to admin accounts, and to clients (channel,
    provider and states only) when EASEL_EXPOSE_ROUTE is on."""

    channel: str = Field(description="The channel of the last attempt: the route taken")
    provider: str
    attempts: list[NativeRouteAttempt]
    cost: float | None = Field(default=None, description="Operator's view: all attempts' cost")


class NativeStatus(BaseModel):
    """An order; the fields after `outputs_expire_at` appear only in the states they describe."""

    ok: bool
    order_id: str
    status: OrderStatus
    product_type: str
    style: str
    model: str
    priority: int
    progress: int
    step: int
    total_steps: int
    prompt: str
    negative_prompt: str
    width: int
    height: int
    n: int
    seed: int
    steps: int
    guidance: float
    llm_enhance: bool
    enhanced_prompt: str | None = Field(
        default=None, description="Only once the enhancer ran: the prompt the model was given"
    )
    enhance: NativeEnhance | None = Field(
        default=None, description="Only for llm_enhance orders once claimed: what it did"
    )
    cost: int
    attempts: int
    created_at: str | None
    started_at: str | None
    completed_at: str | None
    outputs_expire_at: str | None
    queue_position: int | None = Field(
        default=None, description="Only while pending: 1 is next (null in order listings)"
    )
    cancel_requested: bool | None = Field(
        default=None, description="Only while running, once a cancel was asked for: true"
    )
    waiting_for: str | None = Field(
        default=None,
        description="Only while pending and no live worker serves its model: what it waits for",
    )
    loading_model: NativeLoading | None = Field(
        default=None, description="Only while a worker loads (or downloads) its model"
    )
    loras: list[NativeLora] | None = Field(
        default=None, description="Only when the order runs with LoRAs: its style's and its own"
    )
    output_urls: list[str] | None = Field(default=None, description="Only when completed")
    outputs_expired: bool | None = Field(
        default=None, description="Only when completed and the outputs were deleted: true"
    )
    message: str | None = Field(default=None, description="Only with outputs_expired")
    outputs: list[NativeOutput] | None = Field(
        default=None, description="Only when completed and the outputs still exist"
    )
    error: NativeOrderError | None = Field(default=None, description="Only when failed or canceled")
    route: NativeRoute | None = Field(
        default=None,
        description="Only for orders of upstream models once tried, to admin accounts (and to "
        "every client when EASEL_EXPOSE_ROUTE is on)",
    )


class NativeOrderPage(BaseModel):
    ok: bool
    orders: list[NativeStatus]
    next_before: str | None = Field(description="Pass as `before` for the next page; null: last")


class NativeCanceled(BaseModel):
    ok: bool
    order_id: str
    status: OrderStatus
    cancel_requested: bool = Field(description="true: running, it stops at its next step")
    refunded: int


class NativeCredits(BaseModel):
    total: int
    plan: int
    topup: int


class NativeDisabledEndpoint(BaseModel):
    id: str
    url: str = Field(description="scheme://host:port")
    disabled_at: str
    reason: str


class NativeAccount(BaseModel):
    ok: bool
    account_id: str
    email: str
    plan: str
    priority: int
    monthly_quota: int
    credits: NativeCredits
    resets_at: str
    max_images_per_order: int
    animation: bool
    max_running: int
    webhook_secret: str
    webhook_endpoints_disabled: list[NativeDisabledEndpoint] = Field(
        description="Webhook endpoints no longer sent to after failing for "
        "EASEL_WEBHOOK_DISABLE_AFTER_DAYS; POST /api/v1/webhooks/endpoints/{id}/enable sends "
        "their backlog"
    )


class NativePlan(BaseModel):
    id: str
    monthly_quota: int
    priority: int
    max_images_per_order: int
    animation: bool
    api_access: bool
    styles: list[str]
    max_running: int
    max_loras: int
    allow_lora_urls: bool


class NativePlans(BaseModel):
    ok: bool
    plans: list[NativePlan]


def native_need(animation: bool, image: str | None, image_urls: list[str] | None) -> Need:
    """`image` is an image-to-image reference, or an animation's first frame; `image_urls` are
    images to edit by instruction (or to redraw, where the style cannot edit)."""
    if image_urls:
        if image is not None:
            raise InvalidRequest("send `image` or `image_urls`, not both", param="image_urls")
        wanted = (IMAGE_TO_VIDEO,) if animation else (EDIT, IMAGE_TO_IMAGE)
        return Need(wanted, len(image_urls), "image_urls")
    if image is None:
        return Need.text(animation)
    return Need((IMAGE_TO_VIDEO if animation else IMAGE_TO_IMAGE,), 1, "image")


def model_for_need(catalog: Catalog, model: Model, style: str, need: Need) -> Model:
    """The model that serves what the request needs, or a refusal naming what the style can do."""
    found = catalog.route_for(model, need)
    if found is None:
        param = need.param if need.references else "style"
        raise InvalidRequest(refusal(catalog, model, style, need), param=param)
    return found


def to_request(state: State, body: GenerateBody, idempotency_key: str | None) -> GenerationRequest:
    catalog: Catalog = state.catalog
    product = catalog.products.get(body.product_type)
    if product is None:
        raise InvalidRequest(
            f"unknown product_type {body.product_type!r}; valid: {', '.join(catalog.products)}",
            param="product_type",
        )
    model = catalog.style(body.style)
    if model is None:
        raise InvalidRequest(
            f"unknown style {body.style!r}; valid: {', '.join(catalog.style_names)}", param="style"
        )
    if product.is_animation:
        model = catalog.models[catalog.animation_model]
    model = model_for_need(
        catalog, model, body.style, native_need(product.is_animation, body.image, body.image_urls)
    )
    return build_request(
        state.settings,
        dialect=NAME,
        model=model,
        model_alias=body.style,
        product=product,
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        width=body.width,
        height=body.height,
        steps=body.steps,
        guidance=body.guidance_scale,
        seed=body.seed,
        output_format=body.output_format,
        llm_enhance=body.llm_enhance,
        safety_check=body.safety_check,
        webhook_url=body.webhook_url,
        idempotency_key=idempotency_key,
        body=body.model_dump(),
        loras=[lora.model_dump(exclude_none=True) for lora in body.loras or []],
        known_loras=catalog.loras,
    )


def safety_fields(output: Output) -> dict[str, Any]:
    if output.nsfw_score is None:
        return {}
    fields: dict[str, Any] = {
        "nsfw_detected": output.safety is not None,
        "nsfw_score": output.nsfw_score,
    }
    if output.safety:
        fields["safety"] = output.safety
    return fields


def native_status(
    order: Order, outputs: list[Output], storage: Storage, position: int | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ok": True,
        "order_id": order.id,
        "status": order.status,
        "product_type": order.product_type,
        "style": order.model_alias,
        "model": order.model,
        "priority": order.priority,
        "progress": order.progress,
        "step": order.step,
        "total_steps": order.total_steps,
        "prompt": order.prompt,
        "negative_prompt": order.negative_prompt,
        "width": order.width,
        "height": order.height,
        "n": order.n,
        "seed": order.seed,
        "steps": order.steps,
        "guidance": order.guidance,
        "llm_enhance": order.llm_enhance,
        "cost": order.cost_credits,
        "attempts": order.attempts,
        "created_at": iso(order.created_at),
        "started_at": iso(order.started_at),
        "completed_at": iso(order.completed_at),
        "outputs_expire_at": iso(order.outputs_expire_at),
    }
    if order.enhance_status:
        body["enhanced_prompt"] = order.enhanced_prompt
        body["enhance"] = {
            "status": order.enhance_status,
            "reason": order.enhance_note,
            "negative_prompt": order.enhanced_negative_prompt,
        }
    if order.loras and order.loras != "[]":
        body["loras"] = json.loads(order.loras)
    if order.status == OrderStatus.PENDING:
        body["queue_position"] = position
        if order.stage == WAITING_FOR_WORKER:
            body["waiting_for"] = waiting_message(order.model)
    if order.status == OrderStatus.RUNNING and order.stage == LOADING_MODEL:
        body["loading_model"] = {
            "model": order.model,
            "bytes_done": order.load_bytes_done,
            "bytes_total": order.load_bytes_total,
        }
    if order.status == OrderStatus.RUNNING and order.cancel_requested:
        body["cancel_requested"] = True
    if order.status == OrderStatus.COMPLETED and order.outputs_swept:
        body["output_urls"] = []
        body["outputs_expired"] = True
        body["message"] = f"the outputs expired at {iso(order.outputs_expire_at)} and were deleted"
    elif order.status == OrderStatus.COMPLETED:
        body["output_urls"] = output_urls(order, outputs, storage)
        body["outputs"] = [
            {
                "url": url,
                "seed": o.seed,
                "width": o.width,
                "height": o.height,
                "content_type": o.content_type,
                **safety_fields(o),
            }
            for url, o in zip(
                body["output_urls"], sorted(outputs, key=lambda o: o.index), strict=True
            )
        ]
    if order.status in UNSUCCESSFUL:
        body["error"] = {"code": order.error_code, "message": order.error_message}
    return body


def native_webhook(order: Order, outputs: list[Output], storage: Storage) -> dict[str, Any]:
    """Seed 000's webhook body, plus the error when the order did not complete."""
    payload: dict[str, Any] = {
        "order_id": order.id,
        "status": order.status,
        "output_urls": output_urls(order, outputs, storage),
    }
    if order.status in UNSUCCESSFUL:
        payload["error"] = {"code": order.error_code, "message": order.error_message}
    return payload


@router.post("/api/v1/generate", summary="Submit a generation task", response_model=NativeCreated)
async def generate(
    body: GenerateBody,
    account: CurrentAccount,
    state: State,
    response: Response,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    req = to_request(state, body, idempotency_key)
    if body.image_urls:
        sized = "width" not in body.model_fields_set and "height" not in body.model_fields_set
        req = await with_references(
            req,
            body.image_urls,
            "image_urls",
            state,
            strength=body.strength,
            size_from_images=sized,
        )
    else:
        refs = [body.image] if body.image else []
        req = await with_references(req, refs, "image", state, strength=body.strength)
    order, created = await place(state, account, req)
    response.headers["Idempotent-Replayed"] = str(not created).lower()
    return {
        "ok": True,
        "order_id": order.id,
        "status": order.status,
        "product_type": order.product_type,
        "style": order.model_alias,
        "priority": order.priority,
        "cost": order.cost_credits,
    }


@router.get(
    "/api/v1/status/{order_id}",
    summary="Query an order's status",
    response_model=NativeStatus,
    response_model_exclude_unset=True,
)
async def status(
    order_id: str,
    request: Request,
    account: CurrentAccount,
    state: State,
    wait: Annotated[
        float,
        Query(
            ge=0,
            description="Long poll: wait up to this many seconds (at most EASEL_STATUS_MAX_WAIT) "
            "and answer as soon as the order changes (status, progress, queue position); a "
            "finished order answers at once",
        ),
    ] = 0,
) -> dict[str, Any]:
    async with state.db.transaction(readonly=True) as session:
        body = await read_status(session, account.id, order_id, state.storage)
    if wait <= 0 or body["status"] in FINAL:
        return await routed(state, account, body)
    wait = min(wait, state.settings.status_max_wait)
    async with state.feed.watch(order_id) as watch:
        changed = await unless_client_leaves(request, next_change(watch, body, state, wait))
    return await routed(state, account, changed or body)


async def next_change(
    watch: Watch, body: dict[str, Any], state: State, wait: float
) -> dict[str, Any] | None:
    """The order's status body once it differs from `body`; None after `wait` seconds or when
    the process is stopping."""
    deadline = time.monotonic() + wait
    seen = 0
    while not watch.closing:
        snapshot = watch.snapshot
        if watch.version != seen and snapshot is not None and snapshot.order is not None:
            seen = watch.version
            now = native_status(snapshot.order, snapshot.outputs, state.storage, snapshot.position)
            if now != body:
                return now
        left = deadline - time.monotonic()
        if left <= 0 or not await watch.changed(left):
            return None
    return None


async def read_status(
    session: AsyncSession, account_id: str, order_id: str, storage: Storage
) -> dict[str, Any]:
    """The account's order as its native status body, with its queue position while pending
    (the status route and the events stream)."""
    order = await reads.own_order(session, account_id, order_id)
    order, outputs = await reads.with_outputs(session, order)
    waiting = order.status == OrderStatus.PENDING
    position = await queue.queue_position(session, order) if waiting else None
    return native_status(order, outputs, storage, position)


def route_view(account: Account, settings: Settings) -> bool | None:
    """Whether `account` sees routes: True the operator's full view (admin accounts), False the
    client's (EASEL_EXPOSE_ROUTE), None not at all."""
    if account.is_admin:
        return True
    return False if settings.expose_route else None


async def with_routes(
    session: AsyncSession, bodies: list[dict[str, Any]], full: bool | None
) -> list[dict[str, Any]]:
    """Native status bodies with `route` added where their orders have attempts (one query)."""
    if full is None or not bodies:
        return bodies
    found = await attempts.for_orders(session, [b["order_id"] for b in bodies])
    for body in bodies:
        route = attempts.describe_route(found[body["order_id"]], full=full)
        if route is not None:
            body["route"] = route
    return bodies


async def routed(state: AppState, account: Account, body: dict[str, Any]) -> dict[str, Any]:
    """`body` with its route, where `account` may see it (a read only then)."""
    full = route_view(account, state.settings)
    if full is None:
        return body
    async with state.db.transaction(readonly=True) as session:
        [body] = await with_routes(session, [body], full)
    return body


@router.get(
    "/api/v1/orders",
    summary="List this account's orders, newest first",
    response_model=NativeOrderPage,
    response_model_exclude_unset=True,
)
async def list_orders(
    account: CurrentAccount,
    session: ReadSessionDep,
    state: State,
    limit: Annotated[int, Query(ge=1)] = 20,
    before: Annotated[
        str | None, Query(description="an order id: list orders older than it")
    ] = None,
    status: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    limit = min(limit, state.settings.orders_page_max)
    page = await reads.list_orders(session, account.id, limit=limit, before=before, status=status)
    return {
        "ok": True,
        "orders": await with_routes(
            session,
            [native_status(o, outputs, state.storage, None) for o, outputs in page.orders],
            route_view(account, state.settings),
        ),
        "next_before": page.next_before,
    }


@router.post(
    "/api/v1/orders/{order_id}/cancel",
    summary="Cancel a pending or running order",
    response_model=NativeCanceled,
)
async def cancel(
    order_id: str, account: CurrentAccount, session: SessionDep, state: State
) -> dict[str, Any]:
    order = await lifecycle.cancel(session, account.id, order_id, utcnow())
    return {
        "ok": True,
        "order_id": order.id,
        "status": order.status,
        "cancel_requested": order.status == OrderStatus.RUNNING,
        "refunded": order.cost_credits if order.status == OrderStatus.CANCELED else 0,
    }


@router.get(
    "/api/v1/account", summary="Plan, priority and credits left", response_model=NativeAccount
)
async def account_info(
    account: CurrentAccount, session: SessionDep, state: State
) -> dict[str, Any]:
    plan = state.catalog.plans[account.plan]
    now = utcnow()
    bal = await ledger.balance_with_grant(session, account.id, plan, now)
    return {
        "ok": True,
        "account_id": account.id,
        "email": account.email,
        "plan": plan.id,
        "priority": plan.priority,
        "monthly_quota": plan.credits,
        "credits": {"total": bal.total, "plan": bal.plan, "topup": bal.topup},
        "resets_at": bal.resets_at.isoformat().replace("+00:00", "Z"),
        "max_images_per_order": plan.max_images,
        "animation": plan.animation,
        "max_running": plan.max_running,
        "webhook_secret": account.webhook_secret,
        "webhook_endpoints_disabled": [
            {
                "id": e.id,
                "url": e.origin,
                "disabled_at": iso(e.disabled_at) or "",
                "reason": e.disabled_reason or "",
            }
            for e in await endpoints.disabled_endpoints(session, account.id)
        ],
    }


@router.get("/api/v1/plans", summary="The plans (public)", response_model=NativePlans)
async def plans(state: State) -> dict[str, Any]:
    catalog = state.catalog
    return {
        "ok": True,
        "plans": [
            {
                "id": p.id,
                "monthly_quota": p.credits,
                "priority": p.priority,
                "max_images_per_order": p.max_images,
                "animation": p.animation,
                "api_access": p.api_access,
                "styles": [
                    s for m in catalog.models.values() if p.allows_model(m.id) for s in m.styles
                ],
                "max_running": p.max_running,
                "max_loras": p.max_loras,
                "allow_lora_urls": p.allow_lora_urls,
            }
            for p in catalog.plans.values()
        ],
    }


class NativeModelInfo(BaseModel):
    name: str = Field(description="The style a request names")
    model: str = Field(description="The catalog model the name names")
    capabilities: list[str] = Field(
        description="text_to_image / image_to_image / edit / inpaint / text_to_video / "
        "image_to_video"
    )
    routes: dict[str, str] = Field(description="Each capability's catalog model")
    max_references: int = Field(description="The most reference images one order takes")
    width: int
    height: int
    max_steps: int | None
    max_images: int | None
    credits: dict[str, int] = Field(description="Per image, by acceleration level")
    video: bool
    max_seconds: int | None = Field(description="Videos made by length: the longest, in seconds")
    credits_per_second: int | None = Field(description="Videos made by length: the price")


class NativeModels(BaseModel):
    ok: bool
    models: list[NativeModelInfo]


@router.get(
    "/api/v1/models",
    summary="The styles, what each can do, its limits and price (public)",
    response_model=NativeModels,
)
async def models(state: State) -> dict[str, Any]:
    catalog = state.catalog
    named = [(s, m) for m in catalog.models.values() for s in m.styles]
    return {"ok": True, "models": [describe(catalog, model, name) for name, model in named]}


DIALECT = Dialect(name=NAME, router=router, callback_body=native_webhook)
