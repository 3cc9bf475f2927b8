"""Out of memory splits a batch in halves; NaN or black output fails its order clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline

from easel.config import Settings
from tests.support import oom_backend
from tests.support.app import new_account
from tests.support.generation import balance, output_pixels, place, tiny_state, wait_orders
from tests.support.worker import running_worker

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PRO_CREDITS = 800
TOLERANCE = 1  # per channel: batched and split runs round apart by one step (test_batching)
# (account, seed, n): 4 outputs, the first order's two in the first half of the batch
ORDERS = [(0, 100, 2), (1, 200, 1), (0, 300, 1)]


async def test_out_of_memory_splits_the_batch_and_every_order_gets_its_own_images(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = oom_backend.register(monkeypatch, limit=len(ORDERS) + 1)
    state = tiny_state(settings, tmp_path, tiny_sdxl, extra=oom_backend.catalog_table(tiny_sdxl))
    try:
        accounts = [(await new_account(state, "pro"))[0] for _ in range(2)]

        async def run() -> list[str]:
            ids = [await place(state, accounts[a], s, n=n, style="oom") for a, s, n in ORDERS]
            async with running_worker(state) as worker:
                done = await wait_orders(state, ids)
            assert [o.status for o in done] == ["completed"] * len(ORDERS), [
                o.error_message for o in done
            ]
            assert list(worker.recent_batches) == [ids]
            return ids

        whole = await run()
        assert backend.calls == [4]
        backend.limit, backend.calls = 1, []
        split = await run()
        # 4 -> halves of 2 (out of memory) -> single images.
        assert backend.calls == [4, 2, 1, 1, 2, 1, 1]

        for (_, seed, n), a, b in zip(ORDERS, whole, split, strict=True):
            unsplit, halves = await output_pixels(state, a), await output_pixels(state, b)
            assert [s for s, _ in halves] == [s for s, _ in unsplit] == [seed + i for i in range(n)]
            for (_, x), (_, y) in zip(unsplit, halves, strict=True):
                assert np.abs(x.astype(int) - y.astype(int)).max() <= TOLERANCE
        assert await balance(state, accounts[0]) == PRO_CREDITS - 2 * 3
        assert await balance(state, accounts[1]) == PRO_CREDITS - 2 * 1
    finally:
        await state.db.dispose()


async def test_a_single_image_out_of_memory_fails_its_order_refunded(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = oom_backend.register(monkeypatch, limit=0)
    state = tiny_state(settings, tmp_path, tiny_sdxl, extra=oom_backend.catalog_table(tiny_sdxl))
    try:
        account, _ = await new_account(state, "pro")
        ids = [await place(state, account, seed, n=2, style="oom") for seed in (1, 2)]
        async with running_worker(state):
            done = await wait_orders(state, ids)
        for order in done:
            assert (order.status, order.error_code) == ("failed", "out_of_memory")
            message = order.error_message or ""
            assert "256x256" in message and "smaller size" in message
            assert "EASEL_MAX_BATCH_IMAGES" in message and "refunded" in message
        assert backend.calls[:2] == [4, 2]
        assert await balance(state, account) == PRO_CREDITS
    finally:
        await state.db.dispose()


def broken_decoder(tiny_sdxl: Path, dest: Path, how: str) -> Path:
    """The tiny pipeline with its VAE decoder broken: every weight NaN, or a last layer that
    drives every pixel far below black."""
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl))
    with torch.no_grad():
        if how == "nan":
            for weight in pipe.vae.decoder.parameters():
                weight.fill_(float("nan"))
        else:
            pipe.vae.decoder.conv_out.weight.zero_()
            pipe.vae.decoder.conv_out.bias.fill_(-10.0)
    pipe.save_pretrained(dest)
    return dest


@pytest.mark.parametrize(("how", "what"), [("nan", "NaN"), ("black", "all-black")])
async def test_nan_or_black_output_fails_the_order_as_a_numerical_failure(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path, how: str, what: str
) -> None:
    model = broken_decoder(tiny_sdxl, tmp_path / f"broken-{how}", how)
    state = tiny_state(settings, tmp_path, model)
    try:
        accounts = [(await new_account(state, "pro"))[0] for _ in range(2)]
        ids = [await place(state, acct, seed) for seed, acct in enumerate(accounts)]
        async with running_worker(state) as worker:
            done = await wait_orders(state, ids)
        assert list(worker.recent_batches) == [ids]
        for order in done:
            assert (order.status, order.error_code) == ("failed", "numerical_failure")
            message = order.error_message or ""
            assert what in message and "VAE" in message and "refunded" in message
            assert await output_pixels(state, order.id) == []
        for account in accounts:
            assert await balance(state, account) == PRO_CREDITS
    finally:
        await state.db.dispose()
