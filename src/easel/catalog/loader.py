"""Load the shipped catalog, merge the operator's TOML over it, and check it."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from easel.catalog.schedulers import KEEP_SCHEDULER, SCHEDULERS, is_flow_matching

ACCELERATIONS = ("none", "regular", "high")
ACCELERATION_KEYS = ("steps", "scheduler")


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

    def allows_model(self, model_id: str) -> bool:
        return "*" in self.models or model_id in self.models


@dataclass(frozen=True)
class Product:
    id: str
    images: int = 1
    frames: int = 0
    credits: int | None = None

    @property
    def is_animation(self) -> bool:
        return self.frames > 0


@dataclass(frozen=True)
class Model:
    id: str
    family: str
    source: str
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

    def style(self, name: str) -> Model | None:
        for model in self.models.values():
            if name in model.styles:
                return model
        return None

    def resolve(self, name: str) -> Model | None:
        """A model by id, style or alias."""
        if name in self.models:
            return self.models[name]
        for model in self.models.values():
            if name in model.styles or name in model.aliases:
                return model
        return None

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


def _check(catalog: Catalog) -> None:
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
        missing = [a for a in ACCELERATIONS if a not in model.credits]
        if missing:
            raise CatalogError(f"models.{model.id}.credits lacks {missing}")
    for plan in catalog.plans.values():
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
        models={k: _build(Model, f"models.{k}", v) for k, v in raw.get("models", {}).items()},
        animation_model=raw.get("animation_model", "animatediff"),
        default_style=raw.get("default_style", "general"),
        dialect_models={k: tuple(v) for k, v in raw.get("dialects", {}).items()},
        video_product=raw.get("video_product", "animation_16f"),
        image_product=raw.get("image_product", "static_image"),
    )
    _check(catalog)
    return catalog
