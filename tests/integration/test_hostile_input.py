"""Hostile input, in every dialect: text that is not text, zero and out-of-range numbers,
malformed or ambiguous URLs and junk JSON bodies get a 4xx in the dialect's own shape that names
the field, and nothing is charged, queued or stored (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from easel.config import Settings
from tests.support.app import app_client, auth, new_account
from tests.support.audit import nothing_happened

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Dialect:
    path: str
    body: dict[str, Any]
    url_fields: tuple[str, ...]  # outbound URL fields (callbacks, reference images)
    message: Callable[[dict[str, Any]], str]  # the error message in this dialect's shape
    refusal_status: int | None = None  # None: any 4xx (seed 002 answers HTTP 200 with code 0)


def native_message(b: dict[str, Any]) -> str:
    assert b["ok"] is False
    return str(b["error"]["message"])


def kie_message(b: dict[str, Any]) -> str:
    assert b["data"] is None and 400 <= b["code"] < 500
    return str(b["msg"])


def tasks_message(b: dict[str, Any]) -> str:
    assert b["code"] == 0
    return str(b["msg"])


def kirin_message(b: dict[str, Any]) -> str:
    return str(b["error"]["error_message"])


def openai_message(b: dict[str, Any]) -> str:
    assert b["error"]["type"] == "invalid_request_error"
    return str(b["error"]["message"])


DIALECTS = {
    "native": Dialect(
        "/api/v1/generate",
        {"style": "general", "prompt": "a boat", "width": 512, "height": 512},
        ("webhook_url", "image"),
        native_message,
    ),
    "kie": Dialect("/api/v1/qwen/generate", {"prompt": "a boat"}, ("callBackUrl",), kie_message),
    "tasks": Dialect(
        "/api/v1/tasks/create",
        {"model_id": "gpt-image-2", "prompt": "a boat"},
        ("callback_url",),
        tasks_message,
        refusal_status=200,
    ),
    "kirin": Dialect(
        "/kirin/v1/images/generations",
        {"model": "kirin_v2_image", "prompt": "a boat"},
        ("callback_url", "image"),
        kirin_message,
    ),
    "openai": Dialect(
        "/v1/images/generations",
        {"model": "dall-e-3", "prompt": "a boat", "size": "512x512"},
        (),
        openai_message,
    ),
}

# (raw JSON text spliced in as the prompt's value, words the refusal must contain)
BAD_TEXT = [
    ('"a \\ud800 b"', "lone surrogate"),
    ('"a \\udc00\\ud800 b"', "lone surrogate"),
    ('"a \\u0000 b"', "control character"),
    ('"bell \\u0007"', "control character"),
]
BAD_URLS = [
    ("http://[::1:8080/", "IPv6"),
    ("http://a..example.com/hook", "empty label"),
    (f"http://{'a' * 64}.example.com/hook", "at most 63"),
    ("http://example.com\\@127.0.0.1/", "backslash"),
    ("http://0x7f000001/", "numeric host"),
    ("http://user:pw@example.com/", "user name"),
]


def raw_body(body: dict[str, Any], field: str, raw_value: str) -> bytes:
    text = json.dumps(body | {field: "@@"}, ensure_ascii=False)
    return text.replace('"@@"', raw_value).encode()


def stored_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


async def refused(
    client: httpx.AsyncClient, key: str, dialect: Dialect, content: bytes, *words: str
) -> None:
    r = await client.post(
        dialect.path,
        content=content,
        headers=auth(key) | {"content-type": "application/json"},
    )
    if dialect.refusal_status is None:
        assert 400 <= r.status_code < 500, r.text
    else:
        assert r.status_code == dialect.refusal_status, r.text
    message = dialect.message(r.json())
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("name", list(DIALECTS))
async def test_hostile_input_is_refused_and_nothing_happens(
    name: str, settings: Settings, tmp_path: Path
) -> None:
    dialect = DIALECTS[name]
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "mega")
        before = 2000
        for raw, why in BAD_TEXT:
            await refused(
                client, key, dialect, raw_body(dialect.body, "prompt", raw), "prompt", why
            )
        # Raw bytes that are not UTF-8.
        content = (
            json.dumps(dialect.body).replace("a boat", "a \udcff").encode(errors="surrogateescape")
        )
        await refused(client, key, dialect, content, "UTF-8")
        # 50,000 unknown keys, and deep nesting: refused before any model validation.
        junk = dialect.body | {f"k{i}": i for i in range(50_000)}
        await refused(client, key, dialect, json.dumps(junk).encode(), "members")
        deep = json.dumps(dialect.body | {"x": []}).replace("[]", "[" * 5000 + "]" * 5000)
        await refused(client, key, dialect, deep.encode(), "deeper")
        for field in dialect.url_fields:
            for url, why in BAD_URLS:
                body = json.dumps(dialect.body | {field: url}).encode()
                await refused(client, key, dialect, body, field, why)
        await nothing_happened(state, account.id, before)
    assert await asyncio.to_thread(stored_files, settings.outputs_dir) == []


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"width": 0}, "width", "between"),
        ({"height": 0}, "height", "between"),
        ({"width": -512}, "width", "between"),
        ({"steps": 0}, "steps", "between 1 and"),
        ({"steps": 10**6}, "steps", "between 1 and"),
        ({"guidance_scale": 1e9}, "guidance", "between 0 and"),
        ({"seed": -1}, "seed", "between 0 and"),
        ({"seed": 2**64}, "seed", "between 0 and"),
        ({"strength": 0}, "strength", "(0, 1]"),
        ({"negative_prompt": "a\u0001"}, "negative_prompt", "control character"),
    ],
)
async def test_native_numbers_are_bounded(
    extra: dict[str, Any], field: str, words: str, settings: Settings
) -> None:
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "mega")
        body = DIALECTS["native"].body | extra
        r = await client.post("/api/v1/generate", json=body, headers=auth(key))
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["param"] == field and words in error["message"], error
        await nothing_happened(state, account.id, 2000)


async def test_openai_edit_form_fields_are_text(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "mega")
        r = await client.post(
            "/v1/images/edits",
            data={"model": "dall-e-3", "prompt": "a\u0000b"},
            files={"image": ("a.png", b"\x89PNG not really", "image/png")},
            headers=auth(key),
        )
        assert r.status_code == 400, r.text
        assert "control character" in r.json()["error"]["message"]
        await nothing_happened(state, account.id, 2000)


async def test_paths_queries_and_numbers_that_are_not_text_or_json(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_json_bytes": 64 * 1024})
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "mega")
        for path in (
            "/kirin/v1/images/generations?external_task_id=%00",
            "/api/v1/orders/ORD-%00/events",
            "/api/v1/status/ORD-%01",
            "/api/v1/webhooks/deliveries?order_id=%00",
        ):
            r = await client.get(path, headers=auth(key))
            assert r.status_code == 422, (path, r.text)
            assert "control character" in r.text, r.text
        digits = '{"style": "general", "prompt": "x", "seed": ' + "1" * 5000 + "}"
        r = await client.post(
            "/api/v1/generate",
            content=digits.encode(),
            headers=auth(key) | {"content-type": "application/json"},
        )
        assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"]
        big = json.dumps({"style": "general", "prompt": "x", "image": "A" * 100_000})
        r = await client.post(
            "/api/v1/generate",
            content=big.encode(),
            headers=auth(key) | {"content-type": "application/json"},
        )
        assert r.status_code == 413 and "EASEL_MAX_JSON_BYTES" in r.json()["error"]["message"]
        await nothing_happened(state, account.id, 2000)
