"""Prompt enhancers: a tiny random-weight instruct model through the `transformers` backend, and a
chat server on loopback through the `openai` backend (on time and too slow)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from easel.catalog import load_catalog
from easel.config import Settings
from easel.enhance.local import TransformersEnhancer
from easel.enhance.service import DONE, SKIPPED, Enhancing, make_enhancer
from tests.support.app import app_client, auth, new_account
from tests.support.chat_server import chat_server
from tests.support.seeds import SEED_000_BODY
from tests.support.tiny_llm import build_tiny_llm

pytestmark = pytest.mark.anyio
CATALOG = load_catalog()


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("models") / "tiny-llm")


def enhancing(**options: object) -> Enhancing:
    settings = Settings(_env_file=None, **options)  # type: ignore[arg-type]
    return Enhancing(make_enhancer(settings, CATALOG, "cpu"), CATALOG, settings)


async def test_transformers_enhancer_is_seeded_and_cached(tiny_llm: Path) -> None:
    options = {"enhancer": "transformers", "enhancer_model": str(tiny_llm)}
    first = enhancing(**options, enhancer_max_tokens=12)
    assert isinstance(first.enhancer, TransformersEnhancer)
    one = await first.enhance("a red fox in snow", "z-image", seed=7)
    assert one.status == DONE and one.enhancement is not None
    assert one.enhancement.prompt.strip()
    again = await first.enhance("a red fox in snow", "z-image", seed=7)
    assert again.enhancement == one.enhancement
    assert first.enhancer.generations == 1  # the second came from the cache
    fresh = enhancing(**options, enhancer_max_tokens=12)  # another worker: no cache, same text
    assert isinstance(fresh.enhancer, TransformersEnhancer)
    same = await fresh.enhance("a red fox in snow", "z-image", seed=7)
    assert same.enhancement == one.enhancement
    other = await fresh.enhance("a red fox in snow", "qwen-image", seed=7)  # another family
    assert fresh.enhancer.generations == 2
    assert other.enhancement is not None


async def test_a_slow_local_model_stops_at_the_batch_deadline(tmp_path: Path) -> None:
    endless = build_tiny_llm(tmp_path / "endless", stops=False)  # never ends early
    # 1500 new tokens take the tiny model about 3 s here; the limit is 0.3 s for the batch, and
    # the second order of the batch finds no time left.
    service = enhancing(
        enhancer="transformers",
        enhancer_model=str(endless),
        enhancer_max_tokens=1500,
        enhance_timeout_seconds=0.3,
    )
    assert isinstance(service.enhancer, TransformersEnhancer)
    await service.enhance("warm up", "sdxl", seed=1, deadline=time.monotonic() + 0.5)  # loads
    started = time.monotonic()
    deadline = service.deadline()
    outcomes = await asyncio.gather(
        *(service.enhance(p, "sdxl", seed=2, deadline=deadline) for p in ("a fox", "an owl"))
    )
    assert time.monotonic() - started < 1.0
    assert [o.status for o in outcomes] == [SKIPPED, SKIPPED]
    for _ in range(100):  # the generation itself stops at the deadline (max_time)
        if service.enhancer.generations == 2:
            break
        await asyncio.sleep(0.02)
    assert service.enhancer.generations == 2, time.monotonic() - started
    await service.aclose()


async def test_openai_enhancer_on_a_chat_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_ENHANCER_KEY", "sk-local")
    with chat_server() as server:
        service = enhancing(
            enhancer="openai",
            enhancer_base_url=server.url,
            enhancer_model="qwen2.5:1.5b",
            enhancer_api_key_env="TEST_ENHANCER_KEY",
        )
        outcome = await service.enhance("一只红狐狸在雪地里", "sdxl", seed=42)
        assert outcome.status == DONE and outcome.enhancement is not None
        expected = "一只红狐狸在雪地里, golden hour light, 35mm photo, seed 42"
        assert outcome.enhancement.prompt == expected
        assert outcome.enhancement.negative_prompt == "blurry, lowres"
        asked = server.requests[0]
        assert (asked["model"], asked["seed"], asked["authorization"]) == (
            "qwen2.5:1.5b",
            42,
            "Bearer sk-local",
        )
        system, user = asked["messages"]
        assert system["content"] == CATALOG.enhance.system_prompt("sdxl")
        assert "translate it to English" in system["content"]
        assert user["content"].startswith("The prompt is in Chinese; answer in English.")
        await service.enhance("一只红狐狸在雪地里", "sdxl", seed=42)
        assert len(server.requests) == 1  # cached
        await service.enhance("一只红狐狸在雪地里", "qwen-image", seed=42)
        assert "Keep the language" in server.requests[1]["messages"][0]["content"]
        await service.aclose()


async def test_the_cache_keeps_seeds_apart_and_answers_are_bounded() -> None:
    with chat_server() as server:
        service = enhancing(enhancer="openai", enhancer_base_url=server.url)
        one = await service.enhance("a lighthouse", "sdxl", seed=1)
        two = await service.enhance("a lighthouse", "sdxl", seed=2)
        again = await service.enhance("a lighthouse", "sdxl", seed=2)
        assert one.enhancement is not None and two.enhancement is not None
        assert one.enhancement.prompt.endswith("seed 1")
        assert two.enhancement.prompt.endswith("seed 2") and again == two
        assert len(server.requests) == 2
        server.pad = 5000  # longer than EASEL_MAX_PROMPT_CHARS (2500)
        cut = await service.enhance("a lighthouse", "sdxl", seed=3)
        assert cut.enhancement is not None and len(cut.enhancement.prompt) == 2500
        small = enhancing(
            enhancer="openai", enhancer_base_url=server.url, enhancer_max_response_bytes=4000
        )
        big = await small.enhance("a lighthouse", "sdxl", seed=4)
        assert (big.status, big.note) == (SKIPPED, "the enhancer failed (ValueError)")
        await service.aclose()
        await small.aclose()


async def test_a_slow_chat_server_is_skipped() -> None:
    with chat_server(delay=2.0) as server:
        service = enhancing(
            enhancer="openai", enhancer_base_url=server.url, enhance_timeout_seconds=0.3
        )
        started = time.monotonic()
        outcome = await service.enhance("a lighthouse", "sdxl", seed=1)
        assert time.monotonic() - started < 1.5
        assert (outcome.status, outcome.enhancement) == (SKIPPED, None)
        assert outcome.note == "the enhancer took longer than 0.3 s"
        await service.aclose()


async def test_template_and_off() -> None:
    outcome = await enhancing().enhance("a lighthouse", "sdxl", seed=1)
    assert outcome.enhancement is not None
    assert outcome.enhancement.prompt == "a lighthouse"
    assert outcome.enhancement.negative_prompt == CATALOG.models["sdxl-general"].negative_prompt
    off = await enhancing(enhancer="off").enhance("a lighthouse", "sdxl", seed=1)
    assert (off.status, off.note) == (SKIPPED, "prompt enhancement is off on this server")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_plan_prices_enhancement(settings: Settings, tmp_path: Path) -> None:
    operator = tmp_path / "catalog.toml"
    operator.write_text("[plans.pro]\nenhance_credits = 2\n")
    settings = settings.model_copy(update={"catalog": operator})
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "pro")
        body = SEED_000_BODY | {"webhook_url": None}
        enhanced = await client.post("/api/v1/generate", json=body, headers=auth(key))
        plain = await client.post(
            "/api/v1/generate", json=body | {"llm_enhance": False}, headers=auth(key)
        )
        account = (await client.get("/api/v1/account", headers=auth(key))).json()
    assert (enhanced.json()["cost"], plain.json()["cost"]) == (3, 1)
    assert account["credits"]["total"] == 800 - 4
