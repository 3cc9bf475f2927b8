"""The operator's review of blocked and flagged outputs on SQLite and PostgreSQL: an order failed
because its only output was blocked completes once released (charged again), a flagged output
is hidden once confirmed, and nobody else reaches the review."""

from __future__ import annotations

import pytest

from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.tables import Account
from easel.media.video import poster_key
from easel.orders import lifecycle
from easel.orders.lifecycle import NewOutput
from easel.storage import MissingObject
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
