"""/openapi.json describes every JSON route's 200 body (an SDK is generated from it)."""

from __future__ import annotations

from typing import Any

import pytest

from easel.config import Settings
from tests.support.app import app_client

pytestmark = pytest.mark.anyio

EVENTS = "/api/v1/orders/{order_id}/events"  # server-sent events
FILES = "/files/{key}"  # the output's bytes
VIDEO = "/v1/videos/{video_id}/content"  # an MP4 or its thumbnail


async def openapi(settings: Settings) -> dict[str, Any]:
    async with app_client(settings) as (client, _):
        r = await client.get("/openapi.json")
    assert r.status_code == 200, r.text
    spec: dict[str, Any] = r.json()
    return spec


def ok_schema(spec: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    """The JSON schema of a route's 200 body, its $ref resolved."""
    content = spec["paths"][path][method]["responses"]["200"]["content"]
    schema: dict[str, Any] = content["application/json"]["schema"]
    return resolve(spec, schema)


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" in schema:  # seed 002: the task, or a business failure (code 0) with HTTP 200
        return resolve(spec, schema["anyOf"][0])
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        resolved: dict[str, Any] = spec["components"]["schemas"][name]
        return resolved
    return schema


def prop(spec: dict[str, Any], schema: dict[str, Any], name: str) -> dict[str, Any]:
    """A property's schema (a list's items), through a $ref or a nullable anyOf."""
    field: dict[str, Any] = schema["properties"][name]
    for option in field.get("anyOf", [field]):
        if "items" in option:
            return resolve(spec, option["items"])
        if "$ref" in option:
            return resolve(spec, option)
    return field


async def test_every_json_route_declares_its_body(settings: Settings) -> None:
    spec = await openapi(settings)
    routes = [(path, method) for path, ops in spec["paths"].items() for method in ops]
    undeclared = []
    for path, method in routes:
        if path in (EVENTS, FILES, VIDEO):
            continue
        declared = spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]
        schema = declared["schema"]
        options = schema.get("anyOf", [schema])  # seed 002: the task or a business failure
        if not all("$ref" in s or s.get("properties") for s in options):
            undeclared.append(f"{method.upper()} {path}")
    assert undeclared == []
    assert len(routes) >= 24  # every dialect's routes, the webhook log, workers, health
    # The two left out really are not JSON.
    events = spec["paths"][EVENTS]["get"]["responses"]["200"]["content"]
    assert list(events) == ["text/event-stream"]
    files = spec["paths"][FILES]["get"]["responses"]["200"]["content"]
    assert "application/json" not in files
    assert files["image/png"]["schema"] == {"type": "string", "format": "binary"}
    video = spec["paths"][VIDEO]["get"]["responses"]["200"]["content"]
    assert sorted(video) == ["image/jpeg", "video/mp4"]


async def test_bodies_name_their_fields(settings: Settings) -> None:
    spec = await openapi(settings)

    native = ok_schema(spec, "/api/v1/status/{order_id}", "get")
    assert {"order_id", "status", "output_urls", "queue_position", "error"} <= set(
        native["properties"]
    )
    # Fields shown only in some states are optional; the rest are always there.
    assert {"order_id", "status", "started_at"} <= set(native["required"])
    assert not {"queue_position", "output_urls", "outputs", "error"} & set(native["required"])
    assert resolve(spec, native["properties"]["status"])["enum"] == [
        "pending",
        "running",
        "completed",
        "failed",
        "canceled",
    ]
    assert set(prop(spec, native, "outputs")["properties"]) == {
        "url",
        "seed",
        "width",
        "height",
        "content_type",
        "nsfw_detected",
        "nsfw_score",
        "safety",
    }
    page = ok_schema(spec, "/api/v1/orders", "get")
    assert prop(spec, page, "orders") == native
    generated = ok_schema(spec, "/api/v1/generate", "post")
    assert {"order_id", "status", "cost"} <= set(generated["required"])

    kie = ok_schema(spec, "/api/v1/qwen/record-info", "get")
    assert {"code", "msg", "data", "taskId", "successFlag"} <= set(kie["required"])
    assert "imageUrls" in prop(spec, kie, "data")["properties"]
    assert "errorCode" not in kie["required"]
    assert (
        "taskId"
        in prop(spec, ok_schema(spec, "/api/v1/qwen/generate", "post"), "data")["properties"]
    )

    task = prop(spec, ok_schema(spec, "/api/v1/tasks/{task_id}", "get"), "data")
    assert {"task_id", "task_status", "image_urls", "video_url"} <= set(task["required"])
    created = prop(spec, ok_schema(spec, "/api/v1/tasks/create", "post"), "data")
    assert set(created["properties"]) == {"task_id", "request_id", "credits"}
    for path, method in (("/api/v1/tasks/create", "post"), ("/api/v1/tasks/{task_id}", "get")):
        either = spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]
        assert either["schema"]["anyOf"][1]["$ref"].endswith("/TaskApiError")

    kirin = ok_schema(spec, "/kirin/v1/images/generations/{task_id}", "get")
    assert {"task_id", "status", "external_task_id"} <= set(kirin["required"])
    assert not {"error", "output", "usage"} & set(kirin["required"])
    assert ok_schema(spec, "/kirin/v1/images/generations", "get") == kirin
    assert ok_schema(spec, "/kirin/v1/images/generations", "post") == kirin

    images = ok_schema(spec, "/v1/images/generations", "post")
    assert set(images["required"]) == {"created", "data"}
    assert set(prop(spec, images, "data")["properties"]) == {
        "url",
        "b64_json",
        "revised_prompt",
        "nsfw_detected",
    }
    assert ok_schema(spec, "/v1/images/edits", "post") == images
    assert "data" in ok_schema(spec, "/v1/models", "get")["properties"]

    delivery = prop(spec, ok_schema(spec, "/api/v1/webhooks/deliveries", "get"), "deliveries")
    assert {"id", "order_id", "state", "next_attempt_at"} <= set(delivery["required"])
    worker = prop(spec, ok_schema(spec, "/api/v1/workers", "get"), "workers")
    assert {"id", "online", "loaded_models"} <= set(worker["required"])
    assert set(ok_schema(spec, "/healthz", "get")["properties"]) == {
        "ok",
        "version",
        "database",
        "waiters",
        "change_feed_reads",
    }
