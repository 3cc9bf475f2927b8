"""What a catalog model can do, and which model a client's name routes to for what a request needs.

A name (style, alias or model id) names one catalog model. A hosted model (family `upstream`) routes
to its remote channels when one has its credential, else to its `local` channels' models: each of
those may do something else (text to image with SDXL, instruction editing, inpainting), so one name
can serve several kinds of request. A request says what it needs as a list of capabilities in order
of preference; the first route that has one of them takes it, or the request is refused with a
message that lists what the name can do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from easel.catalog import video

if TYPE_CHECKING:
    from easel.catalog.loader import Catalog, Model

TEXT_TO_IMAGE = "text_to_image"
IMAGE_TO_IMAGE = "image_to_image"  # a reference image noised and redrawn (strength)
EDIT = "edit"  # instruction editing from one or more reference images
INPAINT = "inpaint"  # a reference image and a mask: only the masked part is redrawn
TEXT_TO_VIDEO = "text_to_video"
IMAGE_TO_VIDEO = "image_to_video"  # the reference image is the first frame
CAPABILITIES = (TEXT_TO_IMAGE, IMAGE_TO_IMAGE, EDIT, INPAINT, TEXT_TO_VIDEO, IMAGE_TO_VIDEO)
VIDEO = frozenset({TEXT_TO_VIDEO, IMAGE_TO_VIDEO})
TAKES_IMAGES = frozenset({IMAGE_TO_IMAGE, EDIT, INPAINT, IMAGE_TO_VIDEO})

# What a family does when its catalog model does not say (`capabilities = [...]`).
FAMILY_CAPABILITIES: dict[str, tuple[str, ...]] = {
    "sdxl": (TEXT_TO_IMAGE, IMAGE_TO_IMAGE),
    "sdxl-turbo": (TEXT_TO_IMAGE, IMAGE_TO_IMAGE),
    "z-image": (TEXT_TO_IMAGE, IMAGE_TO_IMAGE),
    "qwen-image": (TEXT_TO_IMAGE, IMAGE_TO_IMAGE, INPAINT),
    "qwen-image-edit": (EDIT,),
    "animatediff": (TEXT_TO_VIDEO,),
    "wan": (TEXT_TO_VIDEO, IMAGE_TO_VIDEO),
}
# Families whose backend has an inpainting pipeline (its `inpainting` class attribute).
INPAINTING_FAMILIES = frozenset({"sdxl", "sdxl-turbo", "qwen-image"})
# A hosted model's remote providers: text and one reference image (the hosted image models edit
# by instruction; the provider modules send one image), or video.
UPSTREAM_IMAGE = (TEXT_TO_IMAGE, IMAGE_TO_IMAGE, EDIT)
UPSTREAM_VIDEO = (TEXT_TO_VIDEO,)
# The most reference images a model takes when it does not say (`max_references`).
DEFAULT_MAX_REFERENCES = 1
EDIT_MAX_REFERENCES = 3

WORDS = {
    TEXT_TO_IMAGE: "make an image from text",
    IMAGE_TO_IMAGE: "redraw a reference image",
    EDIT: "edit images by instruction",
    INPAINT: "inpaint with a mask",
    TEXT_TO_VIDEO: "make a video from text",
    IMAGE_TO_VIDEO: "make a video from an image",
}


@dataclass(frozen=True)
class Need:
    """What a request needs: capabilities in order of preference, and its reference images."""

    capabilities: tuple[str, ...]
    references: int = 0
    param: str = "image"  # the request field to name when the images are the problem

    @classmethod
    def text(cls, video: bool = False) -> Need:
        return cls((TEXT_TO_VIDEO,) if video else (TEXT_TO_IMAGE,))


def model_capabilities(model: Model) -> tuple[str, ...]:
    if model.capabilities:
        return tuple(model.capabilities)
    if model.is_upstream:
        return UPSTREAM_VIDEO if model.animation else UPSTREAM_IMAGE
    return FAMILY_CAPABILITIES.get(model.family, (TEXT_TO_IMAGE,))


def runs_alone(model: Model) -> bool:
    """Whether each order of this model is its own pipeline call (its inputs are its own: a
    first frame, images to edit), so the worker claims no followers for it."""
    return bool({IMAGE_TO_VIDEO, EDIT} & set(model_capabilities(model)))


def max_references(model: Model) -> int:
    """The most reference images one order of this model takes (0: none)."""
    if not TAKES_IMAGES & set(model_capabilities(model)):
        return 0
    if model.max_references:
        return model.max_references
    if model.is_upstream:  # a provider module sends one image
        return DEFAULT_MAX_REFERENCES
    return EDIT_MAX_REFERENCES if EDIT in model_capabilities(model) else DEFAULT_MAX_REFERENCES


def routes(catalog: Catalog, model: Model) -> list[Model]:
    """The models a request for `model` may run on, in the order they are tried: the model itself
    when it is local or one of its remote channels is usable, then its local channels' models."""
    if not model.is_upstream:
        return [model]
    found = [model] if any(c.usable and not c.is_local for c in model.channels) else []
    local = sorted((c for c in model.channels if c.is_local), key=lambda c: c.priority)
    found += [catalog.models[c.model] for c in local if c.model in catalog.models]
    return found


def route_for(catalog: Catalog, model: Model, need: Need) -> Model | None:
    """The first route that has the most preferred capability any route has, with room for the
    request's reference images; None when no route can take it."""
    return first_capable(routes(catalog, model), need)


def first_capable(candidates: list[Model], need: Need) -> Model | None:
    """The first candidate with the most preferred capability any of them has (also how a hosted
    model picks the local channel to hand an order to)."""
    for capability in need.capabilities:
        for route in candidates:
            if capability in model_capabilities(route) and need.references <= max_references(route):
                return route
    return None


def name_capabilities(catalog: Catalog, model: Model) -> dict[str, Model]:
    """Each capability a name has, with the model that serves it (the first route that can)."""
    found: dict[str, Model] = {}
    for route in routes(catalog, model):
        for capability in model_capabilities(route):
            found.setdefault(capability, route)
    return {c: found[c] for c in CAPABILITIES if c in found}


def most_references(catalog: Catalog, model: Model, capability: str) -> int:
    """The most images any route of the name takes for `capability` (a hosted model's provider
    may edit one image while its local edit route takes three)."""
    found = [
        max_references(r) for r in routes(catalog, model) if capability in model_capabilities(r)
    ]
    return max(found, default=0)


def makes_video(catalog: Catalog, model: Model) -> bool:
    return bool(VIDEO & set(name_capabilities(catalog, model))) or model.animation


def summary(catalog: Catalog, model: Model) -> str:
    """What a name can do, in words: "make an image from text, edit images by instruction (up to
    3 images)"."""
    parts = []
    for capability in name_capabilities(catalog, model):
        most = most_references(catalog, model, capability)
        extra = ""
        if capability in TAKES_IMAGES:
            extra = f" (up to {most} image{'s' if most > 1 else ''})"
        parts.append(f"{WORDS[capability]}{extra} [{capability}]")
    return ", ".join(parts) or "nothing on this server"


def refusal(catalog: Catalog, model: Model, name: str, need: Need) -> str:
    """Why `name` cannot take a request that needs `need`: what it can do instead."""
    wanted = " or ".join(WORDS[c] for c in need.capabilities)
    capable = [
        r for c in need.capabilities for r in routes(catalog, model) if c in model_capabilities(r)
    ]
    if capable and need.references:
        most = max(max_references(r) for r in capable)
        return (
            f"{need.param}: {name!r} takes at most {most} image(s) to {wanted}, got "
            f"{need.references}; send fewer. It can: {summary(catalog, model)}"
        )
    return f"{name!r} cannot {wanted} on this server; it can: {summary(catalog, model)}"


def describe(catalog: Catalog, model: Model, name: str) -> dict[str, Any]:
    """A name as the model lists show it: capabilities (each with its model), limits and price."""
    serving = name_capabilities(catalog, model)
    return {
        "name": name,
        "model": model.id,
        "capabilities": list(serving),
        "routes": {c: r.id for c, r in serving.items()},
        "max_references": max((most_references(catalog, model, c) for c in serving), default=0),
        "width": model.width,
        "height": model.height,
        "max_steps": model.max_steps or None,
        "max_images": model.max_images or None,
        "credits": dict(model.credits),
        "video": makes_video(catalog, model),
        **video_terms(serving),
    }


def video_terms(serving: dict[str, Model]) -> dict[str, int | None]:
    """A name whose videos are made by length: its longest clip and its price per second."""
    route = next((r for c, r in serving.items() if c in VIDEO and video.by_length(r)), None)
    if route is None:
        return {"max_seconds": None, "credits_per_second": None}
    return {
        "max_seconds": video.longest_seconds(route),
        "credits_per_second": route.credits_per_second or None,
    }


def check_model(model: Model) -> str | None:
    """A catalog error for the model's capability fields, or None."""
    unknown = [c for c in model.capabilities if c not in CAPABILITIES]
    if unknown:
        return f"models.{model.id}.capabilities: unknown {unknown}; known: {list(CAPABILITIES)}"
    if INPAINT in model.capabilities and model.family not in INPAINTING_FAMILIES:
        return (
            f"models.{model.id}.capabilities: family {model.family!r} has no inpainting pipeline "
            f"here, so it cannot inpaint; families that can: {sorted(INPAINTING_FAMILIES)}"
        )
    if model.max_references < 0:
        return f"models.{model.id}.max_references must be 0 (the default) or more"
    return None
