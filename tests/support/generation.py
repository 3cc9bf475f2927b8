"""Orders placed through the submit service, awaited in the database, and their outputs read
back from storage: for worker tests that need no HTTP."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
from PIL import Image

from easel.accounts import ledger
from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.tables import Account, Order
from easel.orders import lifecycle
from easel.orders.request import build_request
from easel.orders.submit import submit
from tests.support.catalogs import tiny_catalog
from tests.support.worker import poll_until

ENDED = ("completed", "failed", "canceled")


def tiny_state(
    settings: Settings, tmp_path: Path, model: Path, steps: int = 2, extra: str = ""
) -> AppState:
    """State whose SDXL styles run the tiny pipeline at 256x256 by default."""
    catalog = tiny_catalog(tmp_path / "catalog.toml", model, steps=steps, side=256, extra=extra)
    return AppState.build(settings.model_copy(update={"catalog": catalog}))


async def place(
    state: AppState,
    account: Account,
    seed: int,
    prompt: str = "a red fox in snow",
    n: int = 1,
    size: int = 256,
    steps: int | None = None,
    style: str = "general",
) -> str:
    model = state.catalog.style(style)
    assert model is not None, style
    req = build_request(
        state.settings,
        dialect="native",
        model=model,
        model_alias=style,
        product=state.catalog.products["static_image"],
        prompt=prompt,
        negative_prompt="blurry",
        width=size,
        height=size,
        n=n,
        seed=seed,
        steps=steps,
    )
    async with state.db.transaction() as session:
        order, _ = await submit(session, state.catalog, account, req, utcnow())
    return order.id


async def wait_orders(
    state: AppState,
    ids: list[str],
    until: tuple[str, ...] = ENDED,
    min_step: int = 0,
    timeout: float = 120,
) -> list[Order]:
    """The orders once every one is in `until` (and at `min_step` or later)."""

    async def fetch() -> list[Order]:
        async with state.db.transaction(readonly=True) as session:
            found = [await session.get(Order, i, populate_existing=True) for i in ids]
        return [o for o in found if o is not None]

    return await poll_until(
        fetch,
        lambda orders: (
            len(orders) == len(ids)
            and all(o.status in until and o.step >= min_step for o in orders)
        ),
        timeout,
        describe=lambda orders: [(o.id, o.status) for o in orders],
    )


async def output_pixels(state: AppState, order_id: str) -> list[tuple[int, np.ndarray]]:
    """(seed, RGB array) of each output of the order, by index."""
    async with state.db.transaction(readonly=True) as session:
        outputs = await lifecycle.get_outputs(session, order_id)
    found = []
    for output in outputs:
        data = await asyncio.to_thread(state.storage.get, output.storage_key)
        found.append((output.seed, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))))
    return found


async def balance(state: AppState, account: Account) -> int:
    async with state.db.transaction(readonly=True) as session:
        return (await ledger.balance(session, account.id, utcnow())).total
