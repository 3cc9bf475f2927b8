"""A local worker screens and stores a batch's outputs while the device generates the next batch
(EASEL_FINISHING_BATCHES=1): the next batch is claimed before the first batch's order completes;
with 0 it is claimed only after. Either way each order completes once, screened, charged once."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from easel.config import Settings
from easel.db.tables import LedgerEntry, Order, Output
from tests.support.app import app_client, auth, new_account
from tests.support.catalogs import tiny_catalog
from tests.support.worker import running_worker, wait_status

SIDE = {"width": 256, "height": 256}

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]


@pytest.mark.parametrize("finishing", [1, 0])
async def test_next_batch_is_claimed_while_outputs_are_screened(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path, finishing: int
) -> None:
    extra = "[products.batch_3]\nimages = 3\n[plans.pro]\nsafety_optional = false\n"
    catalog = tiny_catalog(tmp_path / "catalog.toml", tiny_sdxl, side=256, extra=extra)
    settings = settings.model_copy(
        update={"catalog": catalog, "max_batch_images": 3, "finishing_batches": finishing}
    )
    async with app_client(settings) as (client, state):
        ids = []
        for product in ("batch_3", "batch_3"):
            _, key = await new_account(state, "pro")
            body = {"style": "general", "product_type": product, "prompt": "a red fox"} | SIDE
            r = await client.post("/api/v1/generate", json=body, headers=auth(key))
            assert r.status_code == 200, r.text
            ids.append((r.json()["order_id"], key))
        async with running_worker(state) as worker:
            done = [await wait_status(client, i, auth(k)) for i, k in ids]
        assert [d["status"] for d in done] == ["completed"] * 2, done
        assert sorted(len(b) for b in worker.recent_batches) == [1, 1]  # two batches
        async with state.db.transaction() as s:
            orders = sorted(
                await s.scalars(select(Order).where(Order.id.in_([i for i, _ in ids]))),
                key=lambda o: o.started_at,
            )
            scored = await s.scalars(select(Output.nsfw_score))
            kinds = await s.scalars(
                select(LedgerEntry.kind).where(LedgerEntry.order_id.isnot(None))
            )
            scores, ledger = list(scored), sorted(kinds)
    first, second = orders
    assert first.completed_at and second.started_at
    if finishing:
        assert second.started_at < first.completed_at  # claimed while the first was screened
    else:
        assert second.started_at >= first.completed_at
    assert len(scores) == 6 and all(s is not None for s in scores)
    assert ledger == ["debit", "debit"]
