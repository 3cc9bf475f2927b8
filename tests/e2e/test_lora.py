"""LoRA on the tiny SDXL pipeline (a tiny LoRA made offline with PEFT on its UNet): an order with
it differs from one without, scale 0 gives the base image, orders with different LoRA sets are
not batched together, the LoRAs used are in the status and the PNG metadata; by URL with a wrong
sha256 it is refused before anything is charged, and with the right one it runs from the cache."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.tables import Account, Order
from easel.dialects.native import native_status
from easel.errors import Forbidden, InvalidRequest
from easel.orders import lifecycle, queue
from easel.orders.request import build_request
from easel.orders.submit import place_order
from tests.support.app import new_account
from tests.support.file_server import Route, file_server
from tests.support.generation import balance, output_pixels, tiny_state, wait_orders
from tests.support.tiny_lora import build_tiny_sdxl_lora
from tests.support.worker import running_worker

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PRO_CREDITS = 800


@pytest.fixture(scope="session")
def tiny_loras(tiny_sdxl: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("loras")
    return (
        build_tiny_sdxl_lora(tiny_sdxl, folder / "ink.safetensors", seed=1),
        build_tiny_sdxl_lora(tiny_sdxl, folder / "paper.safetensors", seed=2),
    )


def lora_state(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path, loras: tuple[Path, Path]
) -> AppState:
    ink, paper = loras
    extra = (
        f'[loras.ink]\nfamily = "sdxl"\nsource = "{ink}"\ntrigger_words = ["ink wash"]\n'
        f'[loras.paper]\nfamily = "sdxl"\nsource = "{paper}"\nscale = 0.9\n'
        '[loras.zink]\nfamily = "z-image"\nsource = "/nowhere/zink.safetensors"\n'
    )
    state = tiny_state(settings, tmp_path, tiny_sdxl, extra=extra)
    return AppState.build(state.settings.model_copy(update={"lora_cache_dir": tmp_path / "cache"}))


async def order(
    state: AppState, account: Account, seed: int, loras: list[dict[str, Any]] | None = None
) -> str:
    req = build_request(
        state.settings,
        dialect="native",
        model=state.catalog.models["sdxl-general"],
        model_alias="general",
        product=state.catalog.products["static_image"],
        prompt="a red fox in snow",
        negative_prompt="blurry",
        width=256,
        height=256,
        seed=seed,
        loras=loras,
        known_loras=state.catalog.loras,
    )
    placed, _ = await place_order(state, account, req)
    return placed.id


async def orders_of(state: AppState, account: Account) -> int:
    async with state.db.transaction(readonly=True) as session:
        count = await session.scalar(
            select(func.count()).select_from(Order).where(Order.account_id == account.id)
        )
    return int(count or 0)


def metadata(data: bytes) -> dict[str, Any]:
    with Image.open(io.BytesIO(data)) as image:
        text = image.info["parameters"]
    parsed: dict[str, Any] = json.loads(text)
    return parsed


async def test_orders_with_the_same_lora_set_are_claimed_as_one_batch(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path, tiny_loras: tuple[Path, Path]
) -> None:
    state = lora_state(settings, tmp_path, tiny_sdxl, tiny_loras)
    lease = timedelta(seconds=60)
    try:
        account, _ = await new_account(state, "pro")
        ink = await order(state, account, 7, [{"name": "ink", "scale": 1.0}])
        base = await order(state, account, 7)
        paper = await order(state, account, 7, [{"name": "paper"}])
        ink_again = await order(state, account, 8, [{"name": "ink", "scale": 1.0}])
        base_again = await order(state, account, 9)
        batches = []
        while True:
            async with state.db.transaction() as session:
                leader = await queue.claim_next(session, "w", utcnow(), lease)
            if leader is None:
                break
            async with state.db.transaction() as session:
                followers = await queue.claim_followers(session, leader, "w", utcnow(), lease, 7)
            batches.append([leader.id, *(o.id for o in followers)])
        # paper's set differs; it waits behind the pro plan's four running orders.
        assert batches == [[ink, ink_again], [base, base_again]]
        assert paper not in {i for batch in batches for i in batch}
    finally:
        await state.db.dispose()


async def test_a_lora_changes_the_image_scale_0_is_the_base_and_sets_batch_apart(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path, tiny_loras: tuple[Path, Path]
) -> None:
    state = lora_state(settings, tmp_path, tiny_sdxl, tiny_loras)
    try:
        account, _ = await new_account(state, "pro")
        ink = await order(state, account, 7, [{"name": "ink", "scale": 1.0}])
        base = await order(state, account, 7)
        paper = await order(state, account, 7, [{"name": "paper"}])
        ink_again = await order(state, account, 8, [{"name": "ink", "scale": 1.0}])
        zero = await order(state, account, 7, [{"name": "ink", "scale": 0}])
        ids = [ink, base, paper, ink_again, zero]
        async with running_worker(state) as worker:
            done = await wait_orders(state, ids)
        assert [o.status for o in done] == ["completed"] * 5, [o.error_message for o in done]
        # Only orders with the same LoRA set share a pipeline call.
        sets = {o.id: o.loras for o in done}
        batches = list(worker.recent_batches)
        assert all(len({sets[i] for i in batch}) == 1 for batch in batches), batches
        assert sorted(i for batch in batches for i in batch) == sorted(ids)

        pixels = {i: (await output_pixels(state, i))[0][1].astype(int) for i in ids}
        assert np.abs(pixels[ink] - pixels[base]).mean() > 5  # the LoRA changes the image
        assert np.abs(pixels[paper] - pixels[ink]).mean() > 5  # and another LoRA otherwise
        assert np.array_equal(pixels[zero], pixels[base])  # scale 0: the base image exactly

        # The cached pipeline is the base model again after each batch: the base image once more.
        again = await order(state, account, 7)
        async with running_worker(state):
            await wait_orders(state, [again])
        # Alone it may differ from base (run in a batch) by a rounding on the CPU; a LoRA left
        # on the pipeline changes the image far more (the first assert).
        alone = (await output_pixels(state, again))[0][1].astype(int)
        assert np.abs(alone - pixels[base]).max() <= 2

        async with state.db.transaction(readonly=True) as session:
            found = await session.get(Order, ink)
            assert found is not None
            outputs = await lifecycle.get_outputs(session, ink)
        status = native_status(found, outputs, state.storage, None)
        assert status["loras"] == [{"name": "ink", "scale": 1.0}]
        data = await asyncio.to_thread(state.storage.get, outputs[0].storage_key)
        meta = metadata(data)
        assert meta["loras"] == [{"name": "ink", "scale": 1.0}]
        assert meta["prompt"].endswith(", ink wash")  # its trigger words
        assert await balance(state, account) == PRO_CREDITS - 6
    finally:
        await state.db.dispose()


async def test_a_lora_by_url_needs_its_sha256_and_the_plan(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path, tiny_loras: tuple[Path, Path]
) -> None:
    state = lora_state(settings, tmp_path, tiny_sdxl, tiny_loras)
    body = tiny_loras[1].read_bytes()  # paper's file: no trigger words
    right = hashlib.sha256(body).hexdigest()
    wrong = hashlib.sha256(b"another file").hexdigest()
    try:
        pro, _ = await new_account(state, "pro")
        standard, _ = await new_account(state, "standard")
        with file_server({"/paper.safetensors": Route(body)}) as files:
            url = files.url("/paper.safetensors")
            with pytest.raises(InvalidRequest) as refused:
                await order(state, pro, 7, [{"url": url, "sha256": wrong, "scale": 1.0}])
            assert refused.value.param == "loras[0].sha256"
            assert right in refused.value.message
            with pytest.raises(Forbidden) as forbidden:  # standard: installed LoRAs only
                await order(state, standard, 7, [{"url": url, "sha256": right}])
            assert forbidden.value.param == "loras[0].url"
            assert await orders_of(state, pro) == 0
            assert not list((tmp_path / "cache").glob("*.safetensors"))  # nothing kept
            by_url = await order(state, pro, 7, [{"url": url, "sha256": right.upper()}])
        by_name = await order(state, pro, 7, [{"name": "paper", "scale": 1.0}])
        assert (tmp_path / "cache" / f"{right}.safetensors").read_bytes() == body
        async with running_worker(state):  # the worker finds the file in its cache
            done = await wait_orders(state, [by_url, by_name])
        assert [o.status for o in done] == ["completed"] * 2, [o.error_message for o in done]
        a, b = [(await output_pixels(state, i))[0][1] for i in (by_url, by_name)]
        assert np.array_equal(a, b)  # the same file by URL and by name
        assert await balance(state, pro) == PRO_CREDITS - 2  # the refused ones cost nothing
    finally:
        await state.db.dispose()


@pytest.mark.parametrize(
    ("loras", "param", "status"),
    [
        ([{"name": "nope"}], "loras[0].name", 422),
        ([{"name": "zink"}], "loras[0].name", 422),  # a LoRA for another family
        ([{"name": "ink", "scale": 2.5}], "loras[0].scale", 422),
        ([{"url": "https://example.com/a.safetensors", "sha256": "abc"}], "loras[0].sha256", 422),
        ([{"url": "https://example.com/a.safetensors"}], "loras[0].sha256", 422),
        ([{"name": "ink"}, {"name": "ink"}], "loras[1]", 422),
        ([{"name": "ink", "url": "https://example.com/a.safetensors"}], "loras[0]", 422),
        ([{"name": "ink"}, {"name": "paper"}, {"name": "ink", "scale": 0.5}], "loras[2]", 422),
    ],
)
async def test_lora_refusals_name_the_field(
    settings: Settings,
    tmp_path: Path,
    tiny_sdxl: Path,
    tiny_loras: tuple[Path, Path],
    loras: list[dict[str, Any]],
    param: str,
    status: int,
) -> None:
    state = lora_state(settings, tmp_path, tiny_sdxl, tiny_loras)
    try:
        account, _ = await new_account(state, "pro")
        with pytest.raises(InvalidRequest) as refused:
            await order(state, account, 1, loras)
        assert (refused.value.param, refused.value.status_code) == (param, status)
        assert await orders_of(state, account) == 0
    finally:
        await state.db.dispose()
