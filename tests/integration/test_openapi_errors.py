"""/openapi.json tells the truth about errors and bounds: each route declares the statuses it
answers with its dialect's own error body, and request fields carry the bounds this server's
settings enforce."""

from __future__ import annotations

from typing import Any

import pytest

from easel.config import Settings
from tests.support.app import app_client, auth, new_account

pytestmark = pytest.mark.anyio

CREATE = {
    "/api/v1/generate": ("NativeError", {"style": "general", "prompt": "x"}),
    "/api/v1/qwen/generate": ("KieError", {"prompt": "x"}),
    "/api/v1/tasks/create": ("TaskApiError", {"model_id": "gpt-image-2", "prompt": "x"}),
    "/kirin/v1/images/generations": ("KirinError", {"model": "kirin_v2_image", "prompt": "x"}),
    "/v1/images/generations": ("OpenAIError", {"model": "dall-e-3", "prompt": "x"}),
}


def body_schema(spec: dict[str, Any], path: str) -> dict[str, Any]:
    ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema: dict[str, Any] = spec["components"]["schemas"][ref["$ref"].rsplit("/", 1)[-1]]
    return schema


def field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """A property's schema; for a nullable one, its non-null branch with the shared keys."""
    spec: dict[str, Any] = schema["properties"][name]
    branch = next((s for s in spec.get("anyOf", []) if s.get("type") != "null"), {})
    return branch | {k: v for k, v in spec.items() if k != "anyOf"}


async def test_errors_are_declared_in_each_dialects_shape(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "free")  # no API access: 403 everywhere
        spec = (await client.get("/openapi.json")).json()
        for path, (error_model, body) in CREATE.items():
            responses = spec["paths"][path]["post"]["responses"]
            declared = {s for s in responses if s != "200"}
            # Seed 002 answers business failures (403 here) with HTTP 200 and code 0: its 200 body
            # is the task or the error; only 401, 429 and 503 are HTTP statuses of their own.
            seed_002 = path == "/api/v1/tasks/create"
            statuses = {"401", "429", "503"} if seed_002 else {"401", "403", "413", "503"}
            assert statuses <= declared, (path, declared)
            if seed_002:
                assert not {"403", "413", "422", "4XX"} & declared, declared
            shown = responses["200" if seed_002 else "403"]["content"]["application/json"]
            ref = shown["schema"]["anyOf"][1]["$ref"] if seed_002 else shown["schema"]["$ref"]
            assert ref.endswith(f"/{error_model}"), (path, ref)
            schema = spec["components"]["schemas"][error_model]
            refused = await client.post(path, json=body, headers=auth(key))
            assert refused.status_code == (200 if seed_002 else 403), refused.text
            if seed_002:
                assert refused.json()["code"] == 0
            assert set(refused.json()) <= set(schema["properties"]), (path, refused.json())
        openai = spec["paths"]["/v1/images/generations"]["post"]["responses"]
        assert "422" not in openai and "400" in openai and "504" in openai


async def test_request_bounds_come_from_the_settings(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_prompt_chars": 1234, "max_steps": 77})
    async with app_client(settings) as (client, _):
        spec = (await client.get("/openapi.json")).json()
    native = body_schema(spec, "/api/v1/generate")
    prompt = field(native, "prompt")
    assert (prompt["minLength"], prompt["maxLength"]) == (1, 1234)
    assert field(native, "steps")["maximum"] == 77
    assert (field(native, "width")["minimum"], field(native, "width")["maximum"]) == (256, 2048)
    assert field(native, "webhook_url")["maxLength"] == 2048
    kirin = body_schema(spec, "/kirin/v1/images/generations")
    assert field(kirin, "n")["maximum"] == 9  # the dialect's own, tighter bound
    assert field(kirin, "external_task_id")["maxLength"] == 128
    assert "16:9" in field(kirin, "aspect_ratio")["enum"]
    assert field(body_schema(spec, "/api/v1/qwen/generate"), "num_inference_steps")["maximum"] == 77
    openai = body_schema(spec, "/v1/images/generations")
    assert {"model", "prompt"} <= set(openai["required"])
    header = next(
        p
        for p in spec["paths"]["/api/v1/generate"]["post"]["parameters"]
        if p["name"].lower() == "idempotency-key"
    )
    bound = next((s for s in header["schema"].get("anyOf", []) if s.get("type") != "null"), {})
    assert (bound["minLength"], bound["maxLength"]) == (1, 255)
