"""/openapi.json tells the truth about what requests may hold: the bounds this server enforces,
from its own settings, are written into each request body's schema and the Idempotency-Key
header, so a generated client or a fuzzer sees them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from easel.config import Settings
from easel.orders.request import MAX_SEED

URL_FIELDS = ("webhook_url", "callBackUrl", "callback_url")


def bounds(settings: Settings) -> dict[str, dict[str, Any]]:
    """Request field name -> the JSON Schema bounds the server checks."""
    side = {"minimum": settings.min_side, "maximum": settings.max_side, "multipleOf": 8}
    text = {"maxLength": settings.max_prompt_chars}
    found: dict[str, dict[str, Any]] = {
        "prompt": {"minLength": 1, **text},
        "negative_prompt": text,
        "width": side,
        "height": side,
        "n": {"minimum": 1, "maximum": settings.max_images_per_request},
        "steps": {"minimum": 1, "maximum": settings.max_steps},
        "num_inference_steps": {"minimum": 1, "maximum": settings.max_steps},
        "guidance_scale": {"minimum": 0, "maximum": settings.max_guidance},
        "seed": {"minimum": 0, "maximum": MAX_SEED},
        "strength": {"exclusiveMinimum": 0, "maximum": 1},
        "user": {"maxLength": settings.openai_max_user_chars},
    }
    for name in URL_FIELDS:
        found[name] = {"maxLength": settings.max_webhook_url_chars, "format": "uri"}
    return found


def _non_null(spec: dict[str, Any]) -> dict[str, Any]:
    """A nullable schema's non-null branch (`anyOf: [X, null]`), else the schema itself."""
    return next((s for s in spec.get("anyOf", []) if s.get("type") != "null"), spec)


def _bound(properties: dict[str, Any], known: dict[str, dict[str, Any]]) -> None:
    for name, spec in properties.items():
        extra = known.get(name)
        if extra is None:
            continue
        target = _non_null(spec)
        for key, value in extra.items():
            target.setdefault(key, value)  # a dialect's own tighter bound stays


def declare_bounds(schema: dict[str, Any], settings: Settings) -> None:
    known = bounds(settings)
    components = schema.get("components", {}).get("schemas", {})
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("name", "").lower() == "idempotency-key":
                    bound = {"minLength": 1, "maxLength": settings.max_idempotency_key_chars}
                    _non_null(parameter["schema"]).update(bound)
            for content in operation.get("requestBody", {}).get("content", {}).values():
                body = content.get("schema", {})
                ref = body.get("$ref", "")
                if ref:
                    body = components.get(ref.rsplit("/", 1)[-1], {})
                _bound(body.get("properties", {}), known)


def with_bounds(app: FastAPI, settings: Settings) -> Callable[[], dict[str, Any]]:
    """An `app.openapi` that adds the bounds once, to FastAPI's own document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            declare_bounds(build(), settings)
        assert app.openapi_schema is not None
        return app.openapi_schema

    return openapi
