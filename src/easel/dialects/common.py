"""What every dialect's translator shares: resolving model names and taking reference images."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from easel import metrics
from easel.api.state import AppState
from easel.catalog import Catalog, Model
from easel.catalog.capabilities import (
    EDIT,
    IMAGE_TO_VIDEO,
    TAKES_IMAGES,
    Need,
    makes_video,
    max_references,
    model_capabilities,
    refusal,
)
from easel.config import Settings
from easel.db.tables import Account, Order
from easel.errors import EaselError, InvalidRequest
from easel.media.references import Reference, load_reference
from easel.orders.request import GenerationRequest, check_size, size_for_aspect
from easel.orders.submit import place_order


def named_model(catalog: Catalog, dialect: str, name: str, param: str) -> Model:
    """The model a client's name names in this dialect (before routing by what it needs)."""
    accepted = catalog.accepted(dialect)
    model = catalog.named(name) if name in accepted else None
    if model is None:
        raise InvalidRequest(
            f"unknown {param} {name!r}; accepted: {', '.join(accepted)}", param=param
        )
    return model


def resolve_model(
    catalog: Catalog, dialect: str, name: str, param: str, need: Need | None = None
) -> Model:
    """The catalog model that serves `need` (default: text alone) for a client's name; a request
    that needs what no route of the name has is refused, naming what the name can do."""
    named = named_model(catalog, dialect, name, param)
    need = need or Need.text(video=makes_video(catalog, named))
    model = catalog.route_for(named, need)
    if model is None:
        raise InvalidRequest(
            refusal(catalog, named, name, need), param=need.param if need.references else param
        )
    return model


async def place(state: AppState, account: Account, req: GenerationRequest) -> tuple[Order, bool]:
    """`place_order`, timed into easel_submit_duration_seconds by dialect and outcome."""
    started = time.perf_counter()
    outcome = "error"
    try:
        order, created = await place_order(state, account, req)
        outcome = "placed" if created else "replayed"
        return order, created
    except EaselError as exc:
        if exc.status_code < 500:
            outcome = "refused"
        raise
    finally:
        elapsed = time.perf_counter() - started
        metrics.SUBMIT_DURATION.labels(req.dialect, outcome).observe(elapsed)


async def with_references(
    req: GenerationRequest,
    values: Sequence[str],
    param: str,
    state: AppState,
    *,
    allow_data_url: bool = True,
    strength: float | None = None,
    size_from_images: bool = False,
) -> GenerationRequest:
    """Fetch and check reference images (after the cheap checks, before anything is charged).

    `size_from_images`: the client set no size, so an edit takes the last image's aspect ratio."""
    check_reference_count(state.settings, req, len(values), param)
    check_strength(strength)
    if not values:
        return req
    check_image_to_image(req, param)  # before fetching anything
    references = [
        await load_reference(state.settings, value, param, allow_data_url=allow_data_url)
        for value in values
    ]
    req = attach_reference(state.settings, req, references[0], param, strength, references[1:])
    return sized_by_images(state.settings, req) if size_from_images else req


def check_reference_count(
    settings: Settings, req: GenerationRequest, count: int, param: str
) -> None:
    limit = min(settings.max_reference_images, max_references(req.model) or 1)
    if count > limit:
        raise InvalidRequest(
            f"{param} takes at most {limit} image(s) for {req.model_alias!r}, got {count}; "
            "send fewer",
            param=param,
        )


def check_image_to_image(req: GenerationRequest, param: str) -> None:
    if not TAKES_IMAGES & set(model_capabilities(req.model)):
        raise InvalidRequest(
            f"{param}: {req.model_alias!r} is made from the prompt alone on this server; remove "
            "the reference image",
            param=param,
        )


def check_strength(strength: float | None) -> None:
    if strength is not None and not 0 < strength <= 1:
        raise InvalidRequest(f"strength must be in (0, 1], got {strength}", param="strength")


def attach_reference(
    settings: Settings,
    req: GenerationRequest,
    reference: Reference,
    param: str,
    strength: float | None = None,
    more: Sequence[Reference] = (),
    masked: bool = False,
) -> GenerationRequest:
    """The request as image-to-image (or an edit of several images) from checked references.
    `strength` is for a redraw only: an edit or an inpainting refuses it rather than ignore it."""
    check_image_to_image(req, param)
    check_strength(strength)
    if strength is not None and (masked or EDIT in model_capabilities(req.model)):
        does = "inpaints the masked area anew" if masked else "edits by instruction"
        raise InvalidRequest(
            f"strength: {req.model_alias!r} {does} here, which takes no strength; remove it "
            "(it applies to image-to-image redraws)",
            param="strength",
        )
    return replace(
        req,
        reference=reference,
        more_references=tuple(more),
        strength=strength or settings.default_strength,
    )


def sized_by_images(settings: Settings, req: GenerationRequest) -> GenerationRequest:
    """An edit follows its last image's aspect ratio, a video its first frame's (an inpainting,
    the OpenAI dialect's alone, is sized by openai_images.inpaint_size)."""
    if req.reference is None:
        return req
    capabilities = model_capabilities(req.model)
    if EDIT in capabilities:
        shown = (*[req.reference], *req.more_references)[-1]
    elif IMAGE_TO_VIDEO in capabilities:
        shown = req.reference
    else:
        return req
    width, height = size_for_aspect(req.model, f"{shown.width}:{shown.height}")
    width = min(max(width, settings.min_side), settings.max_side)
    height = min(max(height, settings.min_side), settings.max_side)
    check_size(settings, width, height)
    return replace(req, width=width, height=height)
