"""Orders made in the web console's playground: the native API's fields from a form, the
dialect `console`, placed through the same `place` as every dialect (charged, gated, queued
alike). No routes of its own: the console's pages (easel.console) call `to_request`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import APIRouter

from easel.api.state import AppState
from easel.catalog import Catalog, Model
from easel.catalog.capabilities import Need
from easel.catalog.loader import ACCELERATIONS
from easel.catalog.pricing import check_plan, order_price
from easel.db.tables import Account
from easel.dialects.base import Dialect
from easel.dialects.native import model_for_need, native_webhook
from easel.errors import InvalidRequest
from easel.orders.request import GenerationRequest, build_request, size_for_aspect

NAME = "console"
ASPECTS = ("1:1", "4:3", "3:4", "16:9", "9:16")


@dataclass(frozen=True)
class SizePreset:
    label: str
    width: int
    height: int

    @property
    def value(self) -> str:
        return f"{self.width}x{self.height}"


def size_presets(model: Model) -> list[SizePreset]:
    """The model's default size, then the aspect ratios the dialects accept at its pixel count."""
    presets = [SizePreset(f"default {model.width}×{model.height}", model.width, model.height)]
    for ratio in ASPECTS:
        w, h = size_for_aspect(model, ratio)
        if (w, h) != (model.width, model.height):
            presets.append(SizePreset(f"{ratio} {w}×{h}", w, h))
    return presets


def _int(form: Mapping[str, str], name: str, what: str) -> int | None:
    text = form.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be {what}, got {text!r}", param=name) from None


def _size(form: Mapping[str, str], model: Model) -> tuple[int, int]:
    width, height = _int(form, "width", "a whole number"), _int(form, "height", "a whole number")
    if width is not None and height is not None:
        return width, height
    preset = form.get("size", "").strip()
    if preset:
        w, _, h = preset.partition("x")
        if re.fullmatch(r"[0-9]{1,5}", w) and re.fullmatch(r"[0-9]{1,5}", h):
            return int(w), int(h)
        raise InvalidRequest(f"size must look like 768x1152, got {preset!r}", param="size")
    return model.width, model.height


def to_request(state: AppState, form: Mapping[str, str]) -> GenerationRequest:
    """The playground's form as a canonical request; InvalidRequest names the field to change."""
    catalog: Catalog = state.catalog
    style = form.get("style", "").strip()
    model = catalog.style(style)
    if model is None:
        raise InvalidRequest(
            f"choose a style: one of {', '.join(catalog.style_names)}", param="style"
        )
    product_type = form.get("product_type", "static_image").strip() or "static_image"
    product = catalog.products.get(product_type)
    if product is None:
        raise InvalidRequest(
            f"unknown product type {product_type!r}; valid: {', '.join(catalog.products)}",
            param="product_type",
        )
    if product.is_animation:
        model = catalog.models[catalog.animation_model]
    model = model_for_need(catalog, model, style, Need.text(product.is_animation))
    acceleration = form.get("acceleration", "none").strip() or "none"
    if acceleration not in ACCELERATIONS:
        raise InvalidRequest(
            f"acceleration must be one of {', '.join(ACCELERATIONS)}", param="acceleration"
        )
    width, height = _size(form, model)
    seed = _int(form, "seed", "a whole number from 0 to 4294967295 (empty: random)")
    return build_request(
        state.settings,
        dialect=NAME,
        model=model,
        model_alias=style,
        product=product,
        prompt=form.get("prompt", ""),
        negative_prompt=form.get("negative_prompt", "").strip() or None,
        width=width,
        height=height,
        steps=_int(form, "steps", "a whole number (empty: the model's default)"),
        seed=seed,
        acceleration=acceleration,
        llm_enhance=form.get("llm_enhance", "") in ("on", "true", "1"),
        # The playground form's one-time nonce: the same form sent twice places one order.
        idempotency_key=f"console:{nonce}" if (nonce := form.get("nonce", "").strip()) else None,
        body={k: v for k, v in form.items() if k != "csrf_token"},
    )


def quote(state: AppState, account: Account, req: GenerationRequest) -> int:
    """What the order would cost this account's plan, or Forbidden saying why it may not."""
    plan = state.catalog.plans[account.plan]
    check_plan(state.catalog, plan, req)
    return order_price(plan, req, req.llm_enhance)


DIALECT = Dialect(name=NAME, router=APIRouter(), callback_body=native_webhook)
