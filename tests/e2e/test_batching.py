"""Batches on the tiny SDXL pipeline: compatible orders share one pipeline call, each keeps its own
images, seeds and charge.

Batched and one-by-one outputs of the same seed are compared with a tolerance of 1/255 per channel:
on CPU the batched convolutions sum in another order, which moves some pixels by one step of
rounding (measured: at most 1.8e-5 before quantisation, so at most 1 after it).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from easel.clock import utcnow
from easel.config import Settings
from easel.orders import lifecycle
from tests.support.app import new_account
from tests.support.generation import balance, output_pixels, place, tiny_state, wait_orders
from tests.support.worker import running_worker

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PRO_CREDITS = 800
TOLERANCE = 1  # per channel, out of 255 (see the module docstring)
# (account, seed, prompt, n)
ORDERS = [
    (0, 11, "a red fox in snow", 1),
    (1, 22, "a lighthouse at dusk", 2),
    (0, 33, "a bowl of ramen", 1),
    (1, 44, "a paper crane", 1),
]


async def test_a_batch_of_four_orders_from_two_accounts_matches_them_run_one_by_one(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    state = tiny_state(settings, tmp_path, tiny_sdxl)
    try:
        accounts = [(await new_account(state, "pro"))[0] for _ in range(2)]

        async def run(batch_images: int) -> tuple[list[list[str]], list[str]]:
            ids = [await place(state, accounts[a], s, p, n) for a, s, p, n in ORDERS]
            worker_state = replace(
                state, settings=state.settings.model_copy(update={"max_batch_images": batch_images})
            )
            async with running_worker(worker_state) as worker:
                done = await wait_orders(state, ids)
            assert [o.status for o in done] == ["completed"] * 4
            return list(worker.recent_batches), ids

        batches, batched = await run(8)
        assert batches == [batched]  # one claim, one pipeline call
        one_by_one, alone = await run(1)
        assert one_by_one == [[i] for i in alone]

        for (_, seed, _, n), a, b in zip(ORDERS, batched, alone, strict=True):
            together, apart = await output_pixels(state, a), await output_pixels(state, b)
            assert [s for s, _ in together] == [s for s, _ in apart] == [seed + i for i in range(n)]
            for (_, x), (_, y) in zip(together, apart, strict=True):
                assert x.shape == (256, 256, 3)
                assert np.abs(x.astype(int) - y.astype(int)).max() <= TOLERANCE
        distinct = {(await output_pixels(state, i))[0][1].tobytes() for i in batched}
        assert len(distinct) == 4  # every order got its own image, not a neighbour's
        # Each account paid for its own images, twice (two rounds), and nothing else.
        images = {0: 0, 1: 0}
        for a, _, _, n in ORDERS:
            images[a] += n
        for index, account in enumerate(accounts):
            assert await balance(state, account) == PRO_CREDITS - 2 * images[index]
    finally:
        await state.db.dispose()


async def test_incompatible_orders_are_not_batched(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    state = tiny_state(settings, tmp_path, tiny_sdxl)
    try:
        account, _ = await new_account(state, "pro")
        first = await place(state, account, 1)
        more_steps = await place(state, account, 2, steps=3)
        same_as_first = await place(state, account, 3)
        other_size = await place(state, account, 4, size=264)
        async with running_worker(state) as worker:
            done = await wait_orders(state, [first, more_steps, same_as_first, other_size])
        assert [o.status for o in done] == ["completed"] * 4
        assert list(worker.recent_batches) == [[first, same_as_first], [more_steps], [other_size]]
        assert [o.width for o in done] == [256, 256, 256, 264]
    finally:
        await state.db.dispose()


async def test_canceling_one_order_of_a_batch_leaves_the_others_running(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    state = tiny_state(settings, tmp_path, tiny_sdxl, steps=30)
    try:
        keep_account, _ = await new_account(state, "pro")
        cancel_account, _ = await new_account(state, "pro")
        keep = await place(state, keep_account, 5)
        cancel = await place(state, cancel_account, 6)
        async with running_worker(state) as worker:
            await wait_orders(state, [keep, cancel], until=("running",), min_step=1)
            async with state.db.transaction() as session:
                flagged = await lifecycle.cancel(session, cancel_account.id, cancel, utcnow())
            assert flagged.cancel_requested
            canceled = (await wait_orders(state, [cancel]))[0]
            assert canceled.status == "canceled" and canceled.step < 30
            kept = (await wait_orders(state, [keep]))[0]
        assert list(worker.recent_batches) == [[keep, cancel]]
        assert kept.status == "completed" and kept.step == 30
        assert [seed for seed, _ in await output_pixels(state, keep)] == [5]
        assert await output_pixels(state, cancel) == []
        assert await balance(state, cancel_account) == PRO_CREDITS
        assert await balance(state, keep_account) == PRO_CREDITS - 1
    finally:
        await state.db.dispose()
