"""Seed 003, the OpenAI Images API, driven by the official `openai` SDK (sync and async) against a
real uvicorn server, with a worker running the tiny SDXL pipeline."""

from __future__ import annotations

import asyncio
import base64
import io
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path

import httpx
import httpx2
import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from PIL import Image
from sqlalchemy import func, select

from easel.api.state import AppState
from easel.config import Settings
from easel.db.tables import LedgerEntry, Order
from tests.support.app import auth, new_account, serving
from tests.support.catalogs import tiny_catalog
from tests.support.worker import running_worker, wait_status

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# A model that makes one image per request (seed 003: "Some models only support n=1"), one whose
# weights cannot be loaded, and a plan with no credits.
EXTRA = """
[models.single-image]
family = "sdxl"
source = "{model_dir}"
steps = 2
width = 256
height = 256
max_images = 1
aliases = ["one-at-a-time"]

[models.broken]
family = "sdxl"
source = "/nonexistent/easel-weights"
aliases = ["broken-model"]

[plans.broke]
credits = 0
priority = 0
max_images = 4
animation = false
api_access = true
models = ["*"]
max_running = 1

[dialects]
openai = ["qh-draw-x2-preview", "dall-e-3", "one-at-a-time", "broken-model"]
"""
ACCEPTED = ["qh-draw-x2-preview", "dall-e-3", "one-at-a-time", "broken-model"]


@asynccontextmanager
async def served(
    settings: Settings, tmp_path: Path, model_dir: Path, **update: object
) -> AsyncIterator[tuple[AppState, str]]:
    extra = EXTRA.format(model_dir=model_dir)
    catalog = tiny_catalog(tmp_path / "catalog.toml", model_dir, side=256, extra=extra)
    async with serving(settings.model_copy(update={"catalog": catalog, **update})) as served:
        yield served


# The SDK sends through httpx2 (its own httpx); these clients also count what it sends.
@contextmanager
def sdk(base: str, key: str) -> Iterator[tuple[OpenAI, list[httpx2.Request]]]:
    sent: list[httpx2.Request] = []
    with (
        httpx2.Client(event_hooks={"request": [sent.append]}) as http,
        OpenAI(api_key=key, base_url=f"{base}/v1", http_client=http) as client,
    ):
        yield client, sent


@asynccontextmanager
async def async_sdk(base: str, key: str) -> AsyncIterator[tuple[AsyncOpenAI, list[httpx2.Request]]]:
    sent: list[httpx2.Request] = []

    async def record(request: httpx2.Request) -> None:
        sent.append(request)

    async with (
        httpx2.AsyncClient(event_hooks={"request": [record]}) as http,
        AsyncOpenAI(api_key=key, base_url=f"{base}/v1", http_client=http) as client,
    ):
        yield client, sent


def png(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


async def orders_of(state: AppState, account_id: str) -> list[Order]:
    async with state.db.transaction(readonly=True) as s:
        rows = await s.scalars(select(Order).where(Order.account_id == account_id))
        return list(rows)


async def debits(state: AppState, account_id: str) -> int:
    async with state.db.transaction(readonly=True) as s:
        query = select(func.count()).where(
            LedgerEntry.account_id == account_id, LedgerEntry.kind == "debit"
        )
        return int(await s.scalar(query) or 0)


def stored_files(state: AppState) -> list[Path]:
    root = state.settings.outputs_dir
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# fmt: off
def seed_003_example(api_key: str, base_url: str) -> str:
    """Seed 003's "Code Examples", verbatim but for api_key and base_url."""
    from openai import OpenAI

    client = OpenAI(
        api_key=api_key,
        base_url=base_url
    )

    response = client.images.generate(
        model="qh-draw-x2-preview",
        prompt="A futuristic city skyline at dusk, cyberpunk style, neon lights reflecting on rain-slicked streets, cinematic quality",  # noqa: E501
        size="1280x720",
        n=1
    )

    image_url = response.data[0].url
    print(f"Generated image: {image_url}")
    return str(image_url)
# fmt: on


async def test_seed_003_example_verbatim_and_models(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    async with served(settings, tmp_path, tiny_sdxl) as (state, base):
        account, key = await new_account(state, "standard")
        async with running_worker(state):
            url = await asyncio.to_thread(seed_003_example, key, f"{base}/v1")
        async with httpx.AsyncClient() as http:
            served_image = (await http.get(url)).content
        with Image.open(io.BytesIO(served_image)) as image:
            assert (image.format, image.size) == ("PNG", (1280, 720))
        [order] = await orders_of(state, account.id)
        assert (order.dialect, order.model, order.model_alias) == (
            "openai",
            "sdxl-general",
            "qh-draw-x2-preview",
        )
        with sdk(base, key) as (client, _):
            listed = await asyncio.to_thread(client.models.list)
            assert [m.id for m in listed.data] == [*ACCEPTED, "sora-2", "seedance-2"]  # videos
            one = await asyncio.to_thread(client.models.retrieve, "dall-e-3")
            assert (one.id, one.object) == ("dall-e-3", "model")
            with pytest.raises(openai.NotFoundError, match="accepted: qh-draw-x2-preview"):
                await asyncio.to_thread(client.models.retrieve, "dall-e-2")


async def test_async_b64_json_two_images_with_consecutive_seeds(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    async with served(settings, tmp_path, tiny_sdxl) as (state, base):
        account, key = await new_account(state, "standard")
        async with running_worker(state), async_sdk(base, key) as (client, _):
            response = await client.images.generate(
                model="dall-e-3",
                prompt="a red fox in the snow",
                size="256x320",
                n=2,
                response_format="b64_json",
                quality="hd",
                style="vivid",
                output_format="png",
                user="end-user-7",
            )
        assert response.created > 0
        seeds = []
        assert response.data is not None
        for item in response.data:
            assert item.url is None and item.revised_prompt is None
            with Image.open(io.BytesIO(base64.b64decode(str(item.b64_json)))) as image:
                assert (image.format, image.size) == ("PNG", (256, 320))
                seeds.append(int(image.info["seed"]))
        assert seeds[1] == seeds[0] + 1
        [order] = await orders_of(state, account.id)
        assert (order.n, order.cost_credits, order.steps) == (2, 2, 3)  # hd: 1.5 x 2 steps
        assert order.prompt.startswith("a red fox in the snow, vivid colors")
        assert order.dialect_data["user"] == "end-user-7"
        assert order.seed == seeds[0]


async def test_edit_with_an_uploaded_png(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    upload = png(320, 320)
    async with served(settings, tmp_path, tiny_sdxl) as (state, base):
        account, key = await new_account(state, "standard")
        with sdk(base, key) as (client, _):

            def edit() -> openai.types.ImagesResponse:
                return client.images.edit(
                    model="dall-e-3",  # image to image (qh-* names edit: test_edits.py)
                    image=[("sketch.png", upload, "image/png")],  # sent as image[]
                    prompt="the same scene at night",
                    n=1,
                    response_format="b64_json",
                )

            async with running_worker(state):
                response = await asyncio.to_thread(edit)
        assert response.data is not None
        with Image.open(io.BytesIO(base64.b64decode(str(response.data[0].b64_json)))) as image:
            assert image.size == (256, 256)  # auto: the model's pixel count at the image's aspect
        [order] = await orders_of(state, account.id)
        assert order.status == "completed"
        assert order.strength == state.settings.default_strength
        assert "mask" not in order.dialect_data
        assert order.reference_key is not None
        assert state.storage.get(order.reference_key) == upload


async def test_refused_requests_charge_and_store_nothing(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    async with served(settings, tmp_path, tiny_sdxl) as (state, base):
        account, key = await new_account(state, "standard")
        broke, broke_key = await new_account(state, "broke")
        async with async_sdk(base, key) as (client, sent):
            await refusals(client)
        assert len(sent) == 10  # each refused request was sent once

        async with async_sdk(base, "sk-wrong") as (bad_key, _):
            with pytest.raises(openai.AuthenticationError) as unauthorized:
                await bad_key.images.generate(model="dall-e-3", prompt="a cat")
        assert unauthorized.value.code == "invalid_api_key"

        async with async_sdk(base, broke_key) as (poor, sent):
            with pytest.raises(openai.RateLimitError) as quota:
                await poor.images.generate(model="dall-e-3", prompt="a cat")
        assert quota.value.code == "insufficient_quota"
        assert len(sent) == 1  # no retries

        for who in (account.id, broke.id):
            assert await orders_of(state, who) == []
            assert await debits(state, who) == 0
        assert stored_files(state) == []


async def refusals(client: AsyncOpenAI) -> None:
    generate = client.images.generate
    with pytest.raises(openai.BadRequestError) as bad_size:
        await generate(model="dall-e-3", prompt="a cat", size="1000x1001")
    error = bad_size.value.body
    assert isinstance(error, dict)
    assert error["param"] == "size" and error["type"] == "invalid_request_error"
    assert "height must be a multiple of 8, got 1001; try 1000" in error["message"]
    assert bad_size.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.BadRequestError, match="WIDTHxHEIGHT such as 1024x1024"):
        await generate(model="dall-e-3", prompt="a cat", size="large")
    with pytest.raises(openai.BadRequestError, match="accepted: qh-draw-x2-preview, dall-e-3"):
        await generate(model="dall-e-2", prompt="a cat")
    with pytest.raises(openai.BadRequestError, match="model is required; accepted"):
        await generate(prompt="a cat")
    with pytest.raises(openai.BadRequestError, match="one-at-a-time makes at most 1 image"):
        await generate(model="one-at-a-time", prompt="a cat", n=2)
    with pytest.raises(openai.PermissionDeniedError, match="at most 3 images per order"):
        await generate(model="dall-e-3", prompt="a cat", n=4)
    with pytest.raises(openai.BadRequestError, match="unknown field 'background'"):
        await generate(model="dall-e-3", prompt="a cat", background="transparent")
    edit = client.images.edit
    with pytest.raises(openai.BadRequestError, match="not a readable JPEG, PNG or WebP"):
        await edit(model="dall-e-3", image=("a.png", b"not an image", "image/png"), prompt="x")
    with pytest.raises(openai.BadRequestError, match="at most 1 image"):
        two = [("a.png", png(320, 320), "image/png")] * 2
        await edit(model="dall-e-3", image=two, prompt="x")
    with pytest.raises(openai.BadRequestError, match="at least 300 px"):
        await edit(model="dall-e-3", image=("a.png", png(64, 64), "image/png"), prompt="x")


async def test_timeout_says_where_to_read_the_order_which_then_completes(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    async with served(settings, tmp_path, tiny_sdxl, openai_wait_timeout=0.3) as (state, base):
        account, key = await new_account(state, "standard")
        _, other_key = await new_account(state, "standard")
        ask = {"model": "dall-e-3", "prompt": "a slow cat", "size": "256x256"}
        once = {"extra_headers": {"Idempotency-Key": "slow-cat-1"}}
        with sdk(base, key) as (client, sent), pytest.raises(openai.InternalServerError) as timeout:
            await asyncio.to_thread(partial(client.images.generate, **ask, **once))
        assert len(sent) == 1  # x-should-retry: false keeps the SDK from paying twice
        assert timeout.value.status_code == 504
        error = timeout.value.body
        assert isinstance(error, dict) and error["type"] == "timeout"
        found = re.search(r"GET (\S+/api/v1/status/(\S+)) ", error["message"])
        assert found is not None, error["message"]
        status_url, order_id = found.groups()
        assert status_url == f"{base}/api/v1/status/{order_id}"
        async with httpx.AsyncClient(base_url=base) as native:
            async with running_worker(state):
                status = await wait_status(native, order_id, auth(key))
            assert status["status"] == "completed" and len(status["output_urls"]) == 1
            assert (await native.get(status_url, headers=auth(other_key))).status_code == 404
        with sdk(base, key) as (client, _):  # the same Idempotency-Key waits for the same order
            again = await asyncio.to_thread(partial(client.images.generate, **ask, **once))
        assert again.data is not None and len(again.data) == 1
        assert [o.id for o in await orders_of(state, account.id)] == [order_id]
        assert await debits(state, account.id) == 1


async def test_failed_order_is_an_error_with_its_message_and_is_refunded(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    async with served(settings, tmp_path, tiny_sdxl) as (state, base):
        account, key = await new_account(state, "standard")
        async with running_worker(state), async_sdk(base, key) as (client, sent):
            with pytest.raises(openai.InternalServerError) as failed:
                await client.images.generate(model="broken-model", prompt="a cat", size="256x256")
        assert len(sent) == 1
        message = str(failed.value.message)
        assert "/nonexistent/easel-weights" in message and "refunded" in message
        assert failed.value.code == "model_unavailable"
        [order] = await orders_of(state, account.id)
        assert order.status == "failed"
        async with state.db.transaction(readonly=True) as s:
            kinds = await s.scalars(
                select(LedgerEntry.kind).where(LedgerEntry.order_id == order.id)
            )
            assert sorted(kinds) == ["debit", "refund"]
