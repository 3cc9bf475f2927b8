"""The operator's review of blocked and flagged outputs on SQLite and PostgreSQL: an order failed
because its only output was blocked completes once released (charged again), a flagged output
is hidden once confirmed, and nobody else reaches the review."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select, update

from easel.accounts import ledger
from easel.api.state import AppState
from easel.catalog.pricing import image_price
from easel.clock import utcnow
from easel.config import Settings
from easel.db.tables import Account, LedgerEntry, Order, Output
from easel.media.encoding import GeneratedImage
from easel.media.video import poster_key
from easel.orders import lifecycle
from easel.orders.lifecycle import NewOutput
from easel.storage import MissingObject
from easel.worker.outputs import Screened, store_outputs
from tests.support.app import app_client, auth, new_account
from tests.support.orders import submit_order

pytestmark = pytest.mark.anyio
PNG = b"\x89PNG\r\n\x1a\n" + b"0" * 64


def held(key: str, safety: str, index: int = 0) -> NewOutput:
    return NewOutput(index, key, "image/png", 7, 512, 512, len(PNG), 0.93, safety)


async def end_with(state: AppState, order_id: str, outputs: list[NewOutput]) -> None:
    for output in outputs:
        state.storage.put(output.storage_key, PNG, "image/png")
    async with state.db.transaction() as session:
        await lifecycle.fail(
            session, order_id, None, "content_policy", "blocked", utcnow(), held=outputs
        )


async def test_release_and_confirm(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "pro")
        admin_account, admin = await new_account(state, "mega")
        async with state.db.transaction() as session:
            row = await session.get(Account, admin_account.id)
            assert row is not None
            row.is_admin = True
        blocked_id = await submit_order(state, account)
        other_id = await submit_order(state, account)
        await end_with(state, blocked_id, [held(f"{blocked_id}/held/0.png", "blocked")])
        await end_with(state, other_id, [held(f"{other_id}/held/0.png", "blocked")])
        assert (await client.get("/api/v1/admin/review", headers=auth(key))).status_code == 404
        page = (await client.get("/api/v1/admin/review?limit=1", headers=auth(admin))).json()
        assert [i["order_id"] for i in page["items"]] == [blocked_id]
        assert page["items"][0]["safety"] == "blocked" and page["items"][0]["nsfw_score"] == 0.93
        rest = await client.get(
            f"/api/v1/admin/review?after={page['next_after']}", headers=auth(admin)
        )
        assert [i["order_id"] for i in rest.json()["items"]] == [other_id]
        first, second = page["items"][0]["output_id"], rest.json()["items"][0]["output_id"]
        before = (await client.get("/api/v1/account", headers=auth(key))).json()["credits"]
        r = await client.post(f"/api/v1/admin/review/{first}/release", headers=auth(admin))
        assert r.json() == {"output_id": first, "safety": "released", "charged": 1}
        again = await client.post(f"/api/v1/admin/review/{first}/release", headers=auth(admin))
        assert again.status_code == 409
        assert "not waiting for review (it is released)" in again.json()["error"]["message"]
        r = await client.post(f"/api/v1/admin/review/{second}/confirm", headers=auth(admin))
        assert r.json()["safety"] == "confirmed"
        status = (await client.get(f"/api/v1/status/{blocked_id}", headers=auth(key))).json()
        other = (await client.get(f"/api/v1/status/{other_id}", headers=auth(key))).json()
        after = (await client.get("/api/v1/account", headers=auth(key))).json()["credits"]
        shown = (await client.get(status["output_urls"][0])).content
        with pytest.raises(MissingObject):
            state.storage.get(f"{other_id}/held/0.png")
        with pytest.raises(MissingObject):
            state.storage.get(f"{blocked_id}/held/0.png")  # moved out of held/
        listing = (await client.get("/api/v1/admin/review", headers=auth(admin))).json()
    assert status["status"] == "completed" and "error" not in status
    assert [o["safety"] for o in status["outputs"]] == ["released"]
    assert shown == PNG
    assert other["status"] == "failed" and other["error"]["code"] == "content_policy"
    assert after["total"] == before["total"] - 1
    assert listing["items"] == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_released_clip_keeps_its_poster(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        account, _ = await new_account(state, "pro")
        admin_account, admin = await new_account(state, "mega")
        async with state.db.transaction() as session:
            row = await session.get(Account, admin_account.id)
            assert row is not None
            row.is_admin = True
        order_id = await submit_order(state, account)
        clip = NewOutput(0, f"{order_id}/held/0.mp4", "video/mp4", 7, 64, 64, 10, 0.9, "blocked")
        state.storage.put(poster_key(clip.storage_key), b"poster", "image/jpeg")
        await end_with(state, order_id, [clip])
        [item] = (await client.get("/api/v1/admin/review", headers=auth(admin))).json()["items"]
        r = await client.post(
            f"/api/v1/admin/review/{item['output_id']}/release", headers=auth(admin)
        )
        assert r.status_code == 200, r.text
        assert state.storage.get(f"{order_id}/0.mp4") == PNG
        assert state.storage.get(f"{order_id}/0.poster.jpg") == b"poster"
        with pytest.raises(MissingObject):
            state.storage.get(f"{order_id}/held/0.poster.jpg")


async def admin_of(state: AppState) -> str:
    admin_account, admin = await new_account(state, "mega")
    async with state.db.transaction() as session:
        row = await session.get(Account, admin_account.id)
        assert row is not None
        row.is_admin = True
    return admin


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_release_refused_before_anything_when_the_account_cannot_pay(
    settings: Settings,
) -> None:
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "pro")
        admin = await admin_of(state)
        order_id = await submit_order(state, account)
        await end_with(state, order_id, [held(f"{order_id}/held/0.png", "blocked")])
        left = (await client.get("/api/v1/account", headers=auth(key))).json()["credits"]
        async with state.db.transaction() as session:  # spend every credit left
            await ledger.debit(session, account.id, None, left["total"], utcnow(), "spent")
        [item] = (await client.get("/api/v1/admin/review", headers=auth(admin))).json()["items"]
        url = f"/api/v1/admin/review/{item['output_id']}/release"
        refused = await client.post(url, headers=auth(admin))
        assert refused.status_code == 402, refused.text
        assert "easel accounts grant" in refused.json()["error"]["message"]
        with pytest.raises(MissingObject):
            state.storage.get(f"{order_id}/0.png")
        assert state.storage.get(f"{order_id}/held/0.png") == PNG
        async with state.db.transaction() as session:
            await ledger.top_up(session, account.id, 5, utcnow())
        assert (await client.post(url, headers=auth(admin))).json()["charged"] == 1
        async with state.db.transaction() as session:
            kinds = await session.scalars(
                select(LedgerEntry.kind).where(LedgerEntry.order_id == order_id)
            )
            assert sorted(kinds) == ["debit", "refund", "release_0"]
        after = (await client.get("/api/v1/account", headers=auth(key))).json()["credits"]
    assert after["total"] == 4


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_release_of_a_missing_or_swept_file_is_a_409_and_charges_nothing(
    settings: Settings,
) -> None:
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "pro")
        admin = await admin_of(state)
        gone_id, swept_id = await submit_order(state, account), await submit_order(state, account)
        await end_with(state, gone_id, [held(f"{gone_id}/held/0.png", "blocked")])
        await end_with(state, swept_id, [held(f"{swept_id}/held/0.png", "blocked")])
        state.storage.delete(f"{gone_id}/held/0.png")
        items = (await client.get("/api/v1/admin/review", headers=auth(admin))).json()["items"]
        swept_output = items[1]["output_id"]
        async with state.db.transaction() as session:
            await session.execute(
                update(Order).where(Order.id == swept_id).values(outputs_swept=True)
            )
        before = (await client.get("/api/v1/account", headers=auth(key))).json()["credits"]
        gone = await client.post(
            f"/api/v1/admin/review/{items[0]['output_id']}/release", headers=auth(admin)
        )
        swept = await client.post(
            f"/api/v1/admin/review/{swept_output}/release", headers=auth(admin)
        )
        listing = (await client.get("/api/v1/admin/review", headers=auth(admin))).json()["items"]
        after = (await client.get("/api/v1/account", headers=auth(key))).json()["credits"]
    assert gone.status_code == 409 and "confirm it instead" in gone.json()["error"]["message"]
    assert swept.status_code == 409 and "past retention" in swept.json()["error"]["message"]
    assert [i["order_id"] for i in listing] == [gone_id]
    assert after == before


def test_image_shares_add_up_to_the_price() -> None:
    assert [image_price(10, 3, i) for i in range(3)] == [3, 3, 4]
    assert sum(image_price(7, 4, i) for i in range(4)) == 7
    assert image_price(5, 1, 0) == 5


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_blurred_output_can_be_released_or_confirmed(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "pro")
        admin = await admin_of(state)
        ids = [await submit_order(state, account) for _ in range(2)]
        for order_id in ids:
            still = GeneratedImage(PNG, "image/png", 7, 512, 512)
            screened = [Screened(replace(still, encoded=b"blurred"), 0.9, "blurred", PNG)]
            [stored] = store_outputs(state.storage, order_id, screened)
            async with state.db.transaction() as session:
                await lifecycle.complete(session, order_id, None, [stored], utcnow())
        items = (await client.get("/api/v1/admin/review", headers=auth(admin))).json()["items"]
        assert [i["safety"] for i in items] == ["blurred", "blurred"]
        assert (await client.get(items[0]["url"])).content == PNG  # the operator sees the original
        async with state.db.transaction() as session:
            originals = [
                (await session.get(Output, i["output_id"])).original_key  # type: ignore[union-attr]
                for i in items
            ]
        assert all(k and k.startswith("private/") for k in originals)
        r = await client.post(
            f"/api/v1/admin/review/{items[0]['output_id']}/release", headers=auth(admin)
        )
        assert r.json()["charged"] == 0
        await client.post(
            f"/api/v1/admin/review/{items[1]['output_id']}/confirm", headers=auth(admin)
        )
        released = (await client.get(f"/api/v1/status/{ids[0]}", headers=auth(key))).json()
        confirmed = (await client.get(f"/api/v1/status/{ids[1]}", headers=auth(key))).json()
        shown = (await client.get(released["output_urls"][0])).content
        for original in originals:
            with pytest.raises(MissingObject):
                state.storage.get(str(original))
    assert shown == PNG and released["outputs"][0]["safety"] == "released"
    assert confirmed["output_urls"] == []
