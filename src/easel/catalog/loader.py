"""Load the shipped catalog, merge the operator's TOML over it, and check it."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from easel.catalog import capabilities, video
from easel.catalog.schedulers import KEEP_SCHEDULER, SCHEDULERS, is_flow_matching

ACCELERATIONS = ("none", "regular", "high")
ACCELERATION_KEYS = ("steps", "scheduler")
PROVIDERS = ("openai", "kie", "fal", "replicate", "easel-tasks", "local")
UPSTREAM = "upstream"  # the family of a model served through its channels
LORA_SCALE_MIN, LORA_SCALE_MAX = -2.0, 2.0  # a LoRA's scale, in the catalog and in requests
# A LoRA trained on a base family also fits the families distilled from it.
LORA_BASES = {"sdxl-turbo": "sdxl"}
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class CatalogError(ValueError):
    """The catalog file is inconsistent; the message names the entry to fix."""


@dataclass(frozen=True)
class Plan:
    id: str
    credits: int
    priority: int
    max_images: int
    animation: bool
    api_access: bool
    models: tuple[str, ...]
    max_running: int
    # Rate limits (0: none): requests per minute and requests open at once (waits, streams),
    # for the whole account and for each of its API keys.
    requests_per_minute: int = 0
    key_requests_per_minute: int = 0
    max_open_requests: int = 0
    key_max_open_requests: int = 0
    max_loras: int = 0  # LoRAs one order may add (catalog names or, with allow_lora_urls, URLs)
    allow_lora_urls: bool = False  # orders may give a LoRA by URL and sha256
    # Videos made by length (models with `seconds`): the longest and the most pixels per frame
    # an order may ask for; 0: no plan limit (the model's own still holds).
    max_video_seconds: int = 0
    max_video_pixels: int = 0
    price: str = ""  # what it costs, as the console's plans page shows it (seed 000's table)
    enhance_credits: int = 0  # added to an order's price when it asks for llm_enhance
    # Safety check of outputs (docs/safety.md): an output whose NSFW score reaches the threshold
    # is blocked (not stored, refunded), blurred or flagged; safety_optional lets a request turn
    # the check off (seed 001's safety_check; EASEL_SAFETY_FORCE overrides).
    safety_threshold: float = 0.8
    safety_action: str = "block"
    safety_optional: bool = True

    def allows_model(self, model_id: str) -> bool:
        return "*" in self.models or model_id in self.models


SAFETY_ACTIONS = ("block", "blur", "flag")


@dataclass(frozen=True)
class Enhance:
    """`[enhance]`: the system prompt an LLM enhancer gets, per model family ("default" for the
    others), and the families that take English only (Chinese prompts are translated)."""

    system_prompts: dict[str, str] = field(default_factory=dict)
    english_only: tuple[str, ...] = ()

    def system_prompt(self, family: str) -> str:
        return self.system_prompts.get(family, self.system_prompts.get("default", ""))


@dataclass(frozen=True)
class SafetyList:
    """`[safety]`: words and regular expressions no prompt may contain (case-insensitive); the
    operator's file adds to the shipped ones with `extra_terms` / `extra_patterns`."""

    terms: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    extra_terms: tuple[str, ...] = ()
    extra_patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Product:
    id: str
    images: int = 1
    frames: int = 0
    credits: int | None = None

    @property
    def is_animation(self) -> bool:
        return self.frames > 0


def lora_fits(lora_family: str, model_family: str) -> bool:
    """Whether a LoRA trained for `lora_family` applies to a model of `model_family`."""
    return lora_family in (model_family, LORA_BASES.get(model_family))


@dataclass(frozen=True)
class Lora:
    """A LoRA adapter for one base family. `source`: a Hugging Face repo id (with `file`, the
    weights file in it), a local .safetensors file, or an http(s) URL (with `sha256`)."""

    id: str
    family: str
    source: str
    file: str | None = None
    sha256: str | None = None
    scale: float = 1.0  # used when a request or a model names it without a scale
    trigger_words: tuple[str, ...] = ()  # appended to the prompt when it is used

    @property
    def is_url(self) -> bool:
        return self.source.startswith(("http://", "https://"))


@dataclass(frozen=True)
class Channel:
    """One route to a model: a remote provider's API, or (`local`) another catalog model run on
    this platform's own workers. Tried by priority (1 first), at random by weight within one."""

    provider: str  # openai | kie | fal | replicate | easel-tasks | local
    model: str = ""  # the provider's own model name; for `local`, the catalog model
    base_url: str = ""
    api_key_env: str = ""  # the credential's environment variable; never the key itself
    priority: int = 1
    weight: int = 1
    cost_per_image: float = 0.0  # what the operator pays the provider, for accounting
    max_in_flight: int = 4  # provider jobs one worker keeps going at once on this channel
    timeout_seconds: float = 300.0  # from submit to the outputs, per attempt
    poll_interval: float = 1.0  # seconds between status reads of an accepted job
    failures_to_cool: int = 3  # failures in a row before the channel cools down
    cool_seconds: float = 60.0  # how long it cools (longer when the provider's Retry-After says)
    retries: int = 1  # submits again on this channel after a 429 or 5xx before moving on
    max_retry_wait: float = 10.0  # the longest Retry-After waited for before moving on
    endpoint: str = ""  # a provider's API variant (kie: jobs | qwen)
    options: dict[str, Any] = field(default_factory=dict)  # extra input fields for the provider
    name: str = ""  # unique within the model; defaults to the provider's name

    @property
    def is_local(self) -> bool:
        return self.provider == "local"

    @property
    def credential(self) -> str | None:
        """The key from the environment; None when the variable is unset or empty."""
        if not self.api_key_env:
            return ""
        return os.environ.get(self.api_key_env) or None

    @property
    def usable(self) -> bool:
        """A local channel always is; a remote one when its credential is set."""
        return self.is_local or self.credential is not None


@dataclass(frozen=True)
class Model:
    id: str
    family: str
    source: str = ""
    styles: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    steps: int = 30
    guidance: float = 7.0
    width: int = 1024
    height: int = 1024
    prompt_template: str = "{prompt}"
    negative_prompt: str = ""
    credits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACCELERATIONS, 1))
    config: str | None = None  # component configs for a single-file checkpoint
    variant: str | None = None
    # level -> {steps = share of the steps kept (0-1], scheduler = name}; a level not listed
    # changes nothing
    acceleration: dict[str, dict[str, Any]] = field(default_factory=dict)
    base: str | None = None  # animatediff: the SD 1.5 model its motion adapter animates
    fps: int = 8  # animations: frames per second of the exported clip
    max_images: int = 0  # the most images one order may ask of this model; 0: no model limit
    max_steps: int = 0  # the most denoising steps this model takes (SDXL-Turbo: 4); 0: no limit
    animation: bool = False  # makes clips (a video model of the task API), as animatediff does
    # family "upstream": the routes to this model, tried by priority (docs/providers.md)
    channels: tuple[Channel, ...] = ()
    # LoRAs every order of this model runs with: catalog LoRA name -> scale (a style is its base
    # weights plus these)
    loras: dict[str, float] = field(default_factory=dict)
    # what it does (catalog/capabilities.py); empty: its family's default
    capabilities: tuple[str, ...] = ()
    max_references: int = 0  # the most reference images an order takes; 0: the default (1, edit 3)
    # Videos made by length (wan): the default clip length in seconds (0: a fixed-length clip of
    # the order's product), the most frames one clip may have, frames come as frame_step * k + 1,
    # the most pixels a frame may have (whatever a plan allows), and the price per second of
    # video (instead of the product's credits).
    seconds: int = 0
    max_frames: int = 0
    frame_step: int = 1
    max_pixels: int = 0
    credits_per_second: int = 0

    @property
    def is_upstream(self) -> bool:
        return self.family == UPSTREAM

    def channel(self, name: str) -> Channel | None:
        return next((c for c in self.channels if c.name == name), None)

    def render_prompt(self, prompt: str) -> str:
        return self.prompt_template.replace("{prompt}", prompt)

    def plan_steps(self, acceleration: str, steps: int) -> int:
        """The steps to run for `steps` asked at this acceleration level (at least 1)."""
        share = self.acceleration.get(acceleration, {}).get("steps", 1)
        return max(1, int(steps * share + 0.5))

    def scheduler_for(self, acceleration: str) -> str | None:
        """The scheduler this level names; None keeps the pipeline's own."""
        name: str = self.acceleration.get(acceleration, {}).get("scheduler", KEEP_SCHEDULER)
        return None if name == KEEP_SCHEDULER else name


@dataclass(frozen=True)
class Catalog:
    plans: dict[str, Plan]
    products: dict[str, Product]
    models: dict[str, Model]
    animation_model: str
    default_style: str
    # dialect -> the model names it accepts (its model field's enum), e.g. tasks -> gpt-image-2
    dialect_models: dict[str, tuple[str, ...]] = field(default_factory=dict)
    video_product: str = "animation_16f"  # what a video model of the task API makes
    image_product: str = "static_image"  # what APIs without product types make per image
    loras: dict[str, Lora] = field(default_factory=dict)
    enhance: Enhance = field(default_factory=lambda: Enhance())
    safety: SafetyList = field(default_factory=lambda: SafetyList())

    def style(self, name: str) -> Model | None:
        for model in self.models.values():
            if name in model.styles:
                return model
        return None

    def resolve(self, name: str) -> Model | None:
        """A model by id, style or alias; an upstream model none of whose remote channels has
        its credential here resolves to its first local channel's model (as without channels)."""
        found = self.models.get(name)
        if found is None:
            found = next(
                (m for m in self.models.values() if name in m.styles or name in m.aliases), None
            )
        return None if found is None else self.route(found)

    def named(self, name: str) -> Model | None:
        """The model a name names, before any routing."""
        found = self.models.get(name)
        if found is None:
            found = next(
                (m for m in self.models.values() if name in m.styles or name in m.aliases), None
            )
        return found

    def route_for(self, model: Model, need: capabilities.Need) -> Model | None:
        """The model that serves `need` for a request naming `model` (capabilities.py)."""
        return capabilities.route_for(self, model, need)

    def route(self, model: Model) -> Model:
        """`model`, or the local model it falls back to when no remote channel is usable."""
        if not model.is_upstream or any(c.usable and not c.is_local for c in model.channels):
            return model
        local = sorted((c for c in model.channels if c.is_local), key=lambda c: c.priority)
        return self.models[local[0].model] if local else model

    def accepted(self, dialect: str) -> tuple[str, ...]:
        """The model names a dialect accepts; every id, style and alias when not listed."""
        if dialect in self.dialect_models:
            return self.dialect_models[dialect]
        return tuple(n for m in self.models.values() for n in (m.id, *m.styles, *m.aliases))

    @property
    def style_names(self) -> list[str]:
        return [s for m in self.models.values() for s in m.styles]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _build(kind: type[Any], key: str, raw: dict[str, Any]) -> Any:
    fields = kind.__dataclass_fields__
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise CatalogError(
            f"{key}: unknown field(s) {unknown}; known: {sorted(set(fields) - {'id'})}"
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    try:
        return kind(id=key.split(".", 1)[1], **values)
    except TypeError as exc:
        raise CatalogError(f"{key}: {exc}") from exc


def _build_channels(model_id: str, raw: Any) -> tuple[Channel, ...]:
    where = f"models.{model_id}.channels"
    if not isinstance(raw, list) or not all(isinstance(c, dict) for c in raw):
        raise CatalogError(f"{where} must be an array of tables ([[{where}]])")
    channels: list[Channel] = []
    for number, table in enumerate(raw, 1):
        unknown = sorted(set(table) - set(Channel.__dataclass_fields__))
        if unknown:
            raise CatalogError(
                f"{where}.{number}: unknown field(s) {unknown}; "
                f"known: {sorted(Channel.__dataclass_fields__)}"
            )
        try:
            built = Channel(**table)
        except TypeError as exc:
            raise CatalogError(f"{where}.{number}: {exc}") from exc
        name = built.name or built.provider
        if any(c.name == name for c in channels):
            name = f"{name}-{number}"
        channels.append(replace(built, name=name, options=dict(built.options)))
    return tuple(channels)


def _check_channels(catalog: Catalog, model: Model) -> None:
    where = f"models.{model.id}.channels"
    if model.channels and not model.is_upstream:
        raise CatalogError(
            f"{where}: only a model of family {UPSTREAM!r} has channels; set "
            f'family = "{UPSTREAM}" and route to this model with a channel of provider "local"'
        )
    if model.is_upstream and not model.channels:
        raise CatalogError(f"models.{model.id}: family {UPSTREAM!r} needs at least one channel")
    for channel in model.channels:
        at = f"{where} {channel.name!r}"
        if channel.provider not in PROVIDERS:
            raise CatalogError(f"{at}: unknown provider {channel.provider!r}; known: {PROVIDERS}")
        if channel.is_local:
            target = catalog.models.get(channel.model)
            if target is None or target.is_upstream:
                raise CatalogError(
                    f"{at}: provider local needs `model`, a catalog model run on this platform's "
                    f"workers; {channel.model!r} is not one"
                )
        elif not channel.model:
            raise CatalogError(f"{at}: `model` (the provider's own model name) is missing")
        if channel.weight < 1 or channel.max_in_flight < 1 or channel.failures_to_cool < 1:
            raise CatalogError(f"{at}: weight, max_in_flight and failures_to_cool must be >= 1")
        if min(channel.timeout_seconds, channel.poll_interval) <= 0 or channel.retries < 0:
            raise CatalogError(f"{at}: timeouts and intervals must be positive, retries >= 0")


def _check_acceleration(model: Model) -> None:
    where = f"models.{model.id}.acceleration"
    if not isinstance(model.acceleration, dict):
        raise CatalogError(f"{where} must be a table like {{ regular = {{ steps = 0.7 }} }}")
    for level, plan in model.acceleration.items():
        if level not in ACCELERATIONS:
            raise CatalogError(f"{where}: unknown level {level!r}; known: {list(ACCELERATIONS)}")
        if not isinstance(plan, dict):
            raise CatalogError(f"{where}.{level} must be a table like {{ steps = 0.7 }}")
        unknown = sorted(set(plan) - set(ACCELERATION_KEYS))
        if unknown:
            raise CatalogError(
                f"{where}.{level}: unknown key(s) {unknown}; known: steps, scheduler"
            )
        share = plan.get("steps", 1)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
            raise CatalogError(
                f"{where}.{level}.steps is the share of the steps kept, above 0 and at most 1 "
                f"(0.5 runs half), got {share!r}"
            )
        scheduler = plan.get("scheduler", KEEP_SCHEDULER)
        if scheduler == KEEP_SCHEDULER:
            continue
        if scheduler not in SCHEDULERS:
            raise CatalogError(
                f"{where}.{level}.scheduler {scheduler!r} is unknown; known: "
                f"{[KEEP_SCHEDULER, *SCHEDULERS]}"
            )
        if is_flow_matching(model.family):
            raise CatalogError(
                f"{where}.{level}.scheduler: {model.family} is a flow-matching model and cannot "
                f"use {scheduler!r}; remove the scheduler (only steps change for this family)"
            )


def _check_lora(lora: Lora) -> None:
    where = f"loras.{lora.id}"
    if not lora.source or not lora.family:
        raise CatalogError(f"{where}: `source` and `family` are required")
    if lora.sha256 is not None and not SHA256.match(lora.sha256):
        raise CatalogError(f"{where}.sha256 must be 64 lowercase hex digits, got {lora.sha256!r}")
    if lora.is_url and lora.sha256 is None:
        raise CatalogError(
            f"{where}: a LoRA fetched from a URL needs `sha256` (its file's hash: sha256sum FILE)"
        )
    local = lora.source.startswith(("/", "./", "~")) or lora.source.endswith(".safetensors")
    if not lora.is_url and not local and not lora.file:
        raise CatalogError(
            f"{where}: {lora.source!r} is read as a Hugging Face repo id, which needs `file`, "
            'the weights file in it (e.g. file = "pytorch_lora_weights.safetensors")'
        )
    if not LORA_SCALE_MIN <= lora.scale <= LORA_SCALE_MAX:
        raise CatalogError(
            f"{where}.scale must be between {LORA_SCALE_MIN:g} and {LORA_SCALE_MAX:g}, "
            f"got {lora.scale}"
        )


def _check_model_loras(catalog: Catalog, model: Model) -> None:
    where = f"models.{model.id}.loras"
    if not isinstance(model.loras, dict):
        raise CatalogError(f"{where} must be a table of LoRA name = scale, like {{ ink = 0.8 }}")
    for name, scale in model.loras.items():
        lora = catalog.loras.get(name)
        if lora is None:
            raise CatalogError(f"{where} names unknown LoRA {name!r}; add [loras.{name}]")
        if not lora_fits(lora.family, model.family):
            raise CatalogError(
                f"{where}: LoRA {name!r} is for {lora.family} models, this model is {model.family}"
            )
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise CatalogError(f"{where}.{name} must be a number (the LoRA's scale)")
        if not LORA_SCALE_MIN <= scale <= LORA_SCALE_MAX:
            raise CatalogError(
                f"{where}.{name} must be between {LORA_SCALE_MIN:g} and {LORA_SCALE_MAX:g}, "
                f"got {scale}"
            )


def _check(catalog: Catalog) -> None:
    for lora in catalog.loras.values():
        _check_lora(lora)
    seen: dict[str, str] = {}
    for model in catalog.models.values():
        for name in (model.id, *model.styles, *model.aliases):
            if seen.get(name, model.id) != model.id:
                raise CatalogError(
                    f"name {name!r} is used by models {seen[name]!r} and {model.id!r}"
                )
            seen[name] = model.id
        if model.family == "animatediff" and not model.base:
            raise CatalogError(
                f"models.{model.id}: family animatediff needs `base`, the Stable Diffusion 1.5 "
                'model its motion adapter animates (e.g. base = "emilianJR/epiCRealism")'
            )
        if model.fps < 1:
            raise CatalogError(f"models.{model.id}.fps must be at least 1, got {model.fps}")
        _check_acceleration(model)
        _check_channels(catalog, model)
        _check_model_loras(catalog, model)
        wrong = capabilities.check_model(model) or video.check_model(model)
        if wrong:
            raise CatalogError(wrong)
        missing = [a for a in ACCELERATIONS if a not in model.credits]
        if missing:
            raise CatalogError(f"models.{model.id}.credits lacks {missing}")
    for plan in catalog.plans.values():
        if plan.safety_action not in SAFETY_ACTIONS:
            raise CatalogError(
                f"plans.{plan.id}.safety_action must be one of {SAFETY_ACTIONS}, "
                f"not {plan.safety_action!r}"
            )
        if not 0 <= plan.safety_threshold <= 1:
            raise CatalogError(f"plans.{plan.id}.safety_threshold must be within 0..1")
        if plan.enhance_credits < 0:
            raise CatalogError(f"plans.{plan.id}.enhance_credits must not be negative")
        for model_id in plan.models:
            if model_id != "*" and model_id not in catalog.models:
                raise CatalogError(f"plans.{plan.id}.models names unknown model {model_id!r}")
    if catalog.animation_model not in catalog.models:
        raise CatalogError(f"animation_model {catalog.animation_model!r} is not a model")
    for key in ("video_product", "image_product"):
        if getattr(catalog, key) not in catalog.products:
            raise CatalogError(f"{key} {getattr(catalog, key)!r} is not a product")
    for dialect, names in catalog.dialect_models.items():
        unknown = [n for n in names if catalog.resolve(n) is None]
        if unknown:
            raise CatalogError(f"dialects.{dialect} names unknown models {unknown}")
    if catalog.style(catalog.default_style) is None:
        raise CatalogError(f"default_style {catalog.default_style!r} is no model's style")


def _section(kind: type[Any], key: str, raw: dict[str, Any]) -> Any:
    unknown = sorted(set(raw) - set(kind.__dataclass_fields__))
    if unknown:
        raise CatalogError(f"{key}: unknown field(s) {unknown}")
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def _model(key: str, raw: dict[str, Any]) -> Model:
    raw = dict(raw)
    channels = _build_channels(key, raw.pop("channels", []))
    model: Model = _build(Model, f"models.{key}", raw)
    return replace(model, channels=channels)


def load_catalog(path: Path | None = None) -> Catalog:
    """The shipped catalog, with the operator's file at `path` merged over it."""
    raw = tomllib.loads(resources.files("easel.catalog").joinpath("catalog.toml").read_text())
    if path is not None:
        try:
            raw = _merge(raw, tomllib.loads(Path(path).read_text()))
        except FileNotFoundError as exc:
            raise CatalogError(f"EASEL_CATALOG points at {path}, which does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise CatalogError(f"EASEL_CATALOG file {path} is not valid TOML: {exc}") from exc
    catalog = Catalog(
        plans={k: _build(Plan, f"plans.{k}", v) for k, v in raw.get("plans", {}).items()},
        products={
            k: _build(Product, f"products.{k}", v) for k, v in raw.get("products", {}).items()
        },
        models={k: _model(k, v) for k, v in raw.get("models", {}).items()},
        animation_model=raw.get("animation_model", "animatediff"),
        default_style=raw.get("default_style", "general"),
        dialect_models={k: tuple(v) for k, v in raw.get("dialects", {}).items()},
        video_product=raw.get("video_product", "animation_16f"),
        image_product=raw.get("image_product", "static_image"),
        loras={k: _build(Lora, f"loras.{k}", v) for k, v in raw.get("loras", {}).items()},
        enhance=_section(Enhance, "enhance", raw.get("enhance", {})),
        safety=_section(SafetyList, "safety", raw.get("safety", {})),
    )
    for pattern in (*catalog.safety.patterns, *catalog.safety.extra_patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise CatalogError(
                f"safety: pattern {pattern!r} is not a regular expression: {exc}"
            ) from exc
    _check(catalog)
    return catalog
