"""The canonical generation request every dialect translates into, and its shared rules."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from easel.catalog import Lora, Model, Product, video
from easel.catalog.loader import ACCELERATIONS
from easel.config import Settings
from easel.errors import InvalidRequest
from easel.media.encoding import ANIMATION_FORMATS, IMAGE_FORMATS
from easel.media.references import Reference
from easel.net.urls import parse_url
from easel.orders.loras import LoraUse, check_loras
from easel.orders.text import check_text

MAX_SEED = 2**32 - 1
SIZE_STEP = 64


def size_for_aspect(model: Model, ratio: str, param: str = "aspect_ratio") -> tuple[int, int]:
    """Width x height for "W:H" at about the model's default pixel count, sides multiples of 64."""
    try:
        w, h = (int(part) for part in ratio.split(":"))
        if w <= 0 or h <= 0:
            raise ValueError(ratio)
    except ValueError:
        raise InvalidRequest(f"{param} must look like 16:9, got {ratio!r}", param=param) from None
    area = model.width * model.height
    width = round((area * w / h) ** 0.5 / SIZE_STEP) * SIZE_STEP
    height = round((area * h / w) ** 0.5 / SIZE_STEP) * SIZE_STEP
    return max(width, SIZE_STEP), max(height, SIZE_STEP)


@dataclass(frozen=True)
class DialectData:
    """Dialect-only fields an order keeps for its bodies: each dialect subclasses it with a
    small frozen dataclass, stored as JSON in `orders.extra`."""

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def stored(cls, order: Any) -> dict[str, Any]:
        """What an order of this dialect stored (its JSON form)."""
        data: dict[str, Any] = order.dialect_data or {}
        return data


@dataclass(frozen=True)
class GenerationRequest:
    dialect: str
    model: Model
    model_alias: str
    product: Product
    prompt: str
    negative_prompt: str
    width: int
    height: int
    n: int
    steps: int
    guidance: float
    seed: int
    acceleration: str
    output_format: str
    llm_enhance: bool
    safety_check: bool
    webhook_url: str | None
    webhook_param: str
    idempotency_key: str | None
    external_task_id: str | None
    request_hash: str
    dialect_data: DialectData | None = None
    webhook_on_start: bool = False  # a callback when the order starts (seed 004)
    reference: Reference | None = None  # image-to-image / edit input, checked
    more_references: tuple[Reference, ...] = ()  # an edit's further images, in order
    mask: Reference | None = None  # inpainting: a grayscale PNG, white = repaint (converted)
    strength: float | None = None
    added_loras: tuple[LoraUse, ...] = ()  # the request's own LoRAs (the plan limits these)
    loras: tuple[LoraUse, ...] = ()  # every LoRA the order runs with: the model's, then those
    frames: int = 0  # a clip's frames (the product's, or the asked length's: catalog/video.py)
    video_seconds: int = 0  # the length asked of a model that makes clips by length; 0: none

    @property
    def task_type(self) -> str:
        return "animation" if self.product.is_animation else "image"


def hash_body(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def check_prompt(settings: Settings, prompt: str | None, param: str = "prompt") -> str:
    if prompt is None or not prompt.strip():
        raise InvalidRequest(f"{param} is required and must not be empty", param=param)
    if len(prompt) > settings.max_prompt_chars:
        raise InvalidRequest(
            f"{param} is {len(prompt)} characters; the limit is {settings.max_prompt_chars}",
            param=param,
        )
    return check_text(prompt, param).strip()


def check_size(settings: Settings, width: int, height: int, multiple: int = 8) -> None:
    """`multiple`: 1 for an inpainting, made at its image's own size (rounded up and cropped
    back by the worker)."""
    lo, hi = settings.min_side, settings.max_side
    for name, value in (("width", width), ("height", height)):
        if value % multiple:
            raise InvalidRequest(
                f"{name} must be a multiple of 8, got {value}; try {max(lo, value // 8 * 8)}",
                param=name,
            )
        if not lo <= value <= hi:
            raise InvalidRequest(f"{name} must be between {lo} and {hi}, got {value}", param=name)
    if width * height > settings.max_pixels:
        raise InvalidRequest(
            f"{width}x{height} is {width * height} pixels; the limit is {settings.max_pixels}",
            param="width",
        )


WXH = re.compile(r"^(\d{1,5})x(\d{1,5})$")


def parse_wxh(settings: Settings, value: str, examples: str) -> tuple[int, int]:
    """An OpenAI-style `size` (WIDTHxHEIGHT, e.g. `examples`), checked as `check_size`."""
    match = WXH.match(value)
    if match is None:
        raise InvalidRequest(
            f"size must be WIDTHxHEIGHT such as {examples}; got {value!r}", param="size"
        )
    width, height = int(match[1]), int(match[2])
    try:
        check_size(settings, width, height)
    except InvalidRequest as exc:
        raise InvalidRequest(f"size {value}: {exc.message}", param="size") from None
    return width, height


def check_webhook_url(settings: Settings, url: str | None, param: str) -> str | None:
    if not url:
        return None
    if len(url) > settings.max_webhook_url_chars:
        raise InvalidRequest(
            f"{param} is longer than {settings.max_webhook_url_chars} characters", param=param
        )
    parse_url(url, param)
    return url


def build_request(
    settings: Settings,
    *,
    dialect: str,
    model: Model,
    model_alias: str,
    product: Product,
    prompt: str | None,
    negative_prompt: str | None = None,
    width: int | None = None,
    height: int | None = None,
    n: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int | None = None,
    acceleration: str = "none",
    output_format: str = "png",
    llm_enhance: bool = False,
    safety_check: bool = True,  # unset: checked; only a request that says false turns it off
    webhook_url: str | None = None,
    webhook_param: str = "webhook_url",
    idempotency_key: str | None = None,
    external_task_id: str | None = None,
    body: Any = None,
    dialect_data: DialectData | None = None,
    webhook_on_start: bool = False,
    loras: Sequence[Mapping[str, Any]] | None = None,
    known_loras: Mapping[str, Lora] | None = None,
    seconds: int | None = None,
    seconds_param: str = "seconds",
    size_multiple: int = 8,
) -> GenerationRequest:
    """Apply the rules every dialect shares; raise InvalidRequest naming what to change."""
    prompt = check_prompt(settings, prompt)
    if negative_prompt is not None and len(negative_prompt) > settings.max_prompt_chars:
        raise InvalidRequest(
            f"negative_prompt is longer than {settings.max_prompt_chars} characters",
            param="negative_prompt",
        )
    for field, text in (
        ("negative_prompt", negative_prompt),
        ("external_task_id", external_task_id),
        ("Idempotency-Key", idempotency_key),
    ):
        if text is not None:
            check_text(text, field)
    width = model.width if width is None else width  # 0 is a size to refuse, not a default
    height = model.height if height is None else height
    check_size(settings, width, height, size_multiple)
    n = product.images if n is None else n
    if not 1 <= n <= settings.max_images_per_request:
        raise InvalidRequest(
            f"n must be between 1 and {settings.max_images_per_request}, got {n}", param="n"
        )
    if model.max_images and n > model.max_images:
        raise InvalidRequest(
            f"{model_alias} makes at most {model.max_images} image(s) per request, got n={n}",
            param="n",
        )
    steps = model.steps if steps is None else steps
    if not 1 <= steps <= settings.max_steps:
        raise InvalidRequest(
            f"steps must be between 1 and {settings.max_steps}, got {steps}", param="steps"
        )
    if model.max_steps and steps > model.max_steps:
        raise InvalidRequest(
            f"{model_alias} runs 1 to {model.max_steps} steps, got {steps}", param="steps"
        )
    steps = model.plan_steps(acceleration, steps)  # the catalog's acceleration mapping
    guidance = model.guidance if guidance is None else guidance
    if not 0 <= guidance <= settings.max_guidance:
        raise InvalidRequest(
            f"guidance must be between 0 and {settings.max_guidance}, got {guidance}",
            param="guidance",
        )
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1 - 64)
    if not 0 <= seed <= MAX_SEED - n:
        raise InvalidRequest(f"seed must be between 0 and {MAX_SEED - n}, got {seed}", param="seed")
    if acceleration not in ACCELERATIONS:
        raise InvalidRequest(
            f"acceleration must be one of {', '.join(ACCELERATIONS)}, got {acceleration!r}",
            param="acceleration",
        )
    formats = ANIMATION_FORMATS if product.is_animation else IMAGE_FORMATS
    if product.is_animation and output_format == IMAGE_FORMATS[0]:
        output_format = ANIMATION_FORMATS[0]  # the image default: the client did not choose
    if output_format not in formats:
        kind = " for an animation" if product.is_animation else ""
        raise InvalidRequest(
            f"output_format must be one of {', '.join(formats)}{kind}, got {output_format!r}",
            param="output_format",
        )
    if (
        idempotency_key is not None
        and not 0 < len(idempotency_key) <= settings.max_idempotency_key_chars
    ):
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {settings.max_idempotency_key_chars} characters",
            param="Idempotency-Key",
        )
    added_loras, all_loras = check_loras(known_loras or {}, model, model_alias, loras)
    frames, video_seconds = clip_length(model, model_alias, product, seconds, seconds_param)
    return GenerationRequest(
        dialect=dialect,
        model=model,
        model_alias=model_alias,
        product=product,
        prompt=prompt,
        negative_prompt=model.negative_prompt if negative_prompt is None else negative_prompt,
        width=width,
        height=height,
        n=n,
        steps=steps,
        guidance=guidance,
        seed=seed,
        acceleration=acceleration,
        output_format=output_format,
        llm_enhance=llm_enhance,
        safety_check=safety_check,
        webhook_url=check_webhook_url(settings, webhook_url, webhook_param),
        webhook_param=webhook_param,
        idempotency_key=idempotency_key,
        external_task_id=external_task_id,
        request_hash=hash_body(body),
        dialect_data=dialect_data,
        webhook_on_start=webhook_on_start,
        added_loras=added_loras,
        loras=all_loras,
        frames=frames,
        video_seconds=video_seconds,
    )


def clip_length(
    model: Model, model_alias: str, product: Product, seconds: int | None, param: str
) -> tuple[int, int]:
    """(frames, seconds asked) of an order: a model that makes clips by length takes `seconds`
    (default its catalog `seconds`), up to its max_frames; others make the product's frames."""
    if not product.is_animation or not video.by_length(model):
        if seconds is not None:
            raise InvalidRequest(
                f"{model_alias!r} makes clips of a fixed length on this server; remove {param}",
                param=param,
            )
        return product.frames, 0
    asked = model.seconds if seconds is None else seconds
    longest = video.longest_seconds(model)
    if not 1 <= asked <= longest:
        raise InvalidRequest(
            f"{param}: {model_alias!r} makes videos of 1 to {longest} seconds on this server "
            f"({model.max_frames} frames at {model.fps} fps), got {asked}; ask for {longest} "
            "or fewer",
            param=param,
        )
    return video.frames_for(model, asked), asked
