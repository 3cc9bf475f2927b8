"""Plan gating and pricing: what a plan may order, and what an order costs in credits."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from easel.catalog.loader import Catalog, Model, Plan, Product
from easel.errors import Forbidden, InvalidRequest


class LoraRef(Protocol):
    @property
    def url(self) -> str | None: ...


class Priced(Protocol):
    """What gating and pricing read of a request."""

    @property
    def model(self) -> Model: ...
    @property
    def model_alias(self) -> str: ...
    @property
    def product(self) -> Product: ...
    @property
    def n(self) -> int: ...
    @property
    def acceleration(self) -> str: ...
    @property
    def added_loras(self) -> Sequence[LoraRef]: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def video_seconds(self) -> int: ...


def check_plan(catalog: Catalog, plan: Plan, req: Priced) -> None:
    if not plan.allows_model(req.model.id):
        allowed = [s for m in plan.models if m in catalog.models for s in catalog.models[m].styles]
        raise Forbidden(
            f"plan {plan.id} does not include {req.model_alias!r}; it allows "
            f"{', '.join(allowed) or 'no styles'}. Upgrade to standard or above for all styles"
        )
    if req.product.is_animation and not plan.animation:
        raise Forbidden(f"plan {plan.id} does not include animation; pro and mega do")
    if req.n > plan.max_images:
        raise Forbidden(
            f"plan {plan.id} allows at most {plan.max_images} images per order, "
            f"this order asks for {req.n}; ask for fewer or upgrade the plan"
        )
    check_loras(plan, req.added_loras)
    check_video(plan, req)


def check_video(plan: Plan, req: Priced) -> None:
    """The length and size of a video made by length, within the model's and the plan's bounds."""
    if not req.video_seconds:
        return
    pixels = req.width * req.height
    if pixels > req.model.max_pixels:
        raise InvalidRequest(
            f"{req.model_alias!r} makes videos of at most {req.model.max_pixels} pixels a frame, "
            f"this order asks for {req.width}x{req.height} ({pixels}); ask for a smaller size",
            param="size",
        )
    if plan.max_video_seconds and req.video_seconds > plan.max_video_seconds:
        raise Forbidden(
            f"plan {plan.id} allows videos of at most {plan.max_video_seconds} seconds, this "
            f"order asks for {req.video_seconds}; ask for a shorter one or upgrade the plan",
            param="seconds",
        )
    if plan.max_video_pixels and pixels > plan.max_video_pixels:
        raise Forbidden(
            f"plan {plan.id} allows videos of at most {plan.max_video_pixels} pixels a frame, "
            f"this order asks for {req.width}x{req.height} ({pixels}); ask for a smaller size "
            "or upgrade the plan",
            param="size",
        )


def check_loras(plan: Plan, loras: Sequence[LoraRef]) -> None:
    if len(loras) > plan.max_loras:
        raise Forbidden(
            f"plan {plan.id} allows at most {plan.max_loras} LoRA(s) per order, this order adds "
            f"{len(loras)}; remove some or upgrade the plan",
            param="loras",
        )
    for number, lora in enumerate(loras):
        if lora.url is not None and not plan.allow_lora_urls:
            raise Forbidden(
                f"plan {plan.id} does not allow LoRAs by URL (pro and mega do); use an "
                "installed LoRA by name",
                param=f"loras[{number}].url",
            )


def check_served(catalog: Catalog, req: Priced, served: Collection[str]) -> None:
    """Refuse a model whose family no backend of this server runs."""
    if req.model.family in served:
        return
    what = "animation" if req.product.is_animation else repr(req.model_alias)
    available = [s for m in catalog.models.values() if m.family in served for s in m.styles]
    raise InvalidRequest(
        f"{what} needs the {req.model.family} backend, which this server does not run yet; "
        f"available styles: {', '.join(available)}",
        param="product_type" if req.product.is_animation else "style",
    )


def price(req: Priced) -> int:
    if req.video_seconds and req.model.credits_per_second:
        return req.model.credits_per_second * req.video_seconds
    if req.product.is_animation and req.product.credits is not None:
        return req.product.credits
    return req.model.credits[req.acceleration] * req.n


def enhance_price(plan: Plan, llm_enhance: bool) -> int:
    """The part of an order's cost for prompt enhancement (refunded when nothing was enhanced)."""
    return plan.enhance_credits if llm_enhance else 0


def order_price(plan: Plan, req: Priced, llm_enhance: bool) -> int:
    """What an order costs on `plan`: the quote shown before and the debit made at submit."""
    return price(req) + enhance_price(plan, llm_enhance)


def image_price(cost: int, n: int, index: int) -> int:
    """Output `index`'s share of an order of `n` outputs costing `cost`: the shares add up to
    `cost` exactly (the remainder goes to the last ones). A blocked output's refund and a
    released one's charge are both this."""
    n = max(n, 1)
    return cost * (index + 1) // n - cost * index // n
