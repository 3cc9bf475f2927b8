"""50 concurrent submits against credits for 10, through a real server on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from easel.accounts import ledger
from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.tables import LedgerEntry, Order
from tests.support.app import auth, free_port, new_account, running_server

pytestmark = pytest.mark.anyio

BODY = {"style": "general", "prompt": "a lighthouse at dusk", "width": 512, "height": 512}


async def test_concurrent_submits_never_overdraw(settings: Settings, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text("[plans.standard]\ncredits = 0\n")
    settings = settings.model_copy(update={"catalog": catalog, "port": free_port()})
    state = AppState.build(settings)
    account, key = await new_account(state, "standard", topup=10)
    try:
        with running_server(settings) as base:
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                responses = await asyncio.gather(
                    *(
                        client.post("/api/v1/generate", json=BODY, headers=auth(key))
                        for _ in range(50)
                    )
                )
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] * 10 + [402] * 40
        for r in responses:
            if r.status_code == 402:
                assert r.json()["error"]["code"] == "quota_exceeded"
                assert "0 are left" in r.json()["error"]["message"]
        async with state.db.transaction() as s:
            orders = await s.scalar(
                select(func.count()).select_from(Order).where(Order.account_id == account.id)
            )
            amounts = list(
                await s.scalars(
                    select(LedgerEntry.amount)
                    .where(LedgerEntry.account_id == account.id)
                    .order_by(LedgerEntry.id)
                )
            )
            bal = await ledger.balance(s, account.id, utcnow())
        assert orders == 10
        assert bal.total == 0
        running = 0
        for amount in amounts:  # the balance never went below zero at any point
            running += amount
            assert running >= 0
    finally:
        await state.db.dispose()
