"""Claiming ahead (EASEL_WEBHOOK_CLAIM_AHEAD), against real loopback endpoints and the real
database (SQLite and PostgreSQL): a finished delivery's slot goes to a reserved one without
leaving the endpoint's limit; the hand-over is written with the result, so a lease that runs out
gives back exactly the slots held; a stopping sender gives its reserved deliveries back unsent."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.tables import WebhookDelivery, WebhookEndpoint
from easel.services.webhook_sender import Claimed, Pools, WebhookSender, claim_and_render
from easel.webhooks import claim
from tests.support.app import app_client, new_account
from tests.support.endpoints import loopback_endpoints, until
from tests.support.webhooks import due_deliveries, sending

pytestmark = pytest.mark.anyio


async def test_handing_over_keeps_the_slot_and_expiry_gives_back_only_held_slots(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"webhook_claim_ahead": 2})
    async with app_client(settings) as (_, state):
        account, _ = await new_account(state, "standard")
        with loopback_endpoints() as endpoints:
            ids = await due_deliveries(state, account, endpoints.add("ok").url, 5)
        now = utcnow()
        async with state.db.transaction() as session:
            [first] = await claim.claim_due(session, settings, 1, now)
            ahead = await claim.claim_ahead(session, settings, {first.endpoint_id}, now)
        assert [first.id] + [d.id for d in ahead] == ids[:3]
        assert [(d.reserved, d.attempts) for d in ahead] == [(True, 1), (True, 1)]
        # Another sender later takes the remaining slots' worth: leased after ours.
        later = now + timedelta(seconds=5)
        async with state.db.transaction() as session:
            others = await claim.claim_due(session, settings, 4, later)
        assert [d.id for d in others] == ids[3:]

        async def slots() -> int:
            async with state.db.transaction(readonly=True) as session:
                endpoint = await session.get(WebhookEndpoint, first.endpoint_id)
                assert endpoint is not None
                return endpoint.in_flight

        assert await slots() == 3  # ours and the other sender's two; reserved ones take none
        ended = claim.Attempt(
            first.id, first.endpoint_id, first.lease_until, 200, None, True, now, 50, ahead[0]
        )
        async with state.db.transaction() as session:
            [done] = await claim.record(session, settings, [ended], now)
        assert done.state == "delivered"
        assert await slots() == 3  # handed to ahead[0], which holds it now
        async with state.db.transaction(readonly=True) as session:
            rows = {
                row.id: row
                for row in await session.scalars(
                    select(WebhookDelivery).where(WebhookDelivery.account_id == account.id)
                )
            }
        assert (rows[ahead[0].id].reserved, rows[ahead[0].id].attempts) == (False, 1)
        assert (rows[ahead[1].id].reserved, rows[ahead[1].id].attempts) == (True, 0)

        # Our sender dies: its leases run out before the other sender's. ahead[0] gives back
        # the slot it was handed; ahead[1] held none.
        expired = ahead[0].lease_until + timedelta(seconds=1)
        async with state.db.transaction() as session:
            assert await claim.release_expired(session, expired) == 2
        assert await slots() == 2


async def test_a_stopping_sender_gives_back_what_it_claimed_ahead(settings: Settings) -> None:
    settings = settings.model_copy(update={"webhook_claim_ahead": 3, "webhook_max_per_endpoint": 2})
    async with app_client(settings) as (_, state):
        account, _ = await new_account(state, "standard")
        with loopback_endpoints() as endpoints:
            endpoint = endpoints.add("ok", delay=0.1)
            ids = await due_deliveries(state, account, endpoint.url, 40)
            async with sending(state, settings):
                await until(lambda: len(endpoint.accepted) >= 6, 10, "six deliveries")
            sent = list(endpoint.received)
        assert endpoint.max_active == 2
        assert len(sent) == len(set(sent)) and set(sent) == set(ids[: len(sent)])  # the oldest
        async with state.db.transaction(readonly=True) as session:
            rows = list(
                await session.scalars(
                    select(WebhookDelivery).where(WebhookDelivery.account_id == account.id)
                )
            )
            [row] = await session.scalars(select(WebhookEndpoint))
        assert row.in_flight == 0
        assert [r for r in rows if r.lease_until is not None] == []
        assert {r.id for r in rows if r.state == "delivered"} == set(sent)
        assert {r.id: r.attempts for r in rows} == {i: int(i in sent) for i in ids}


async def test_claiming_ahead_stays_within_the_endpoint_limit(settings: Settings) -> None:
    settings = settings.model_copy(update={"webhook_claim_ahead": 2})
    async with app_client(settings) as (_, state):
        account, _ = await new_account(state, "standard")
        with loopback_endpoints() as endpoints:
            endpoint = endpoints.add("ok", delay=0.03)
            ids = await due_deliveries(state, account, endpoint.url, 60)
            async with sending(state, settings):
                await until(lambda: len(endpoint.accepted) == 60, 20, "every delivery")
        assert endpoint.max_active == settings.webhook_max_per_endpoint == 4
        assert sorted(endpoint.received) == sorted(ids)  # each once
        async with state.db.transaction(readonly=True) as session:
            rows = list(await session.scalars(select(WebhookDelivery)))
            [row] = await session.scalars(select(WebhookEndpoint))
        assert row.in_flight == 0
        assert {(r.state, r.attempts, r.reserved, r.lease_until) for r in rows} == {
            ("delivered", 1, False, None)
        }


async def test_a_reserved_delivery_too_close_to_its_lease_end_is_not_passed(
    settings: Settings,
) -> None:
    """EASEL_WEBHOOK_MAX_PER_ENDPOINT=1 sends one at a time, oldest first. A slow (2xx) receiver
    leaves the head of the reserved queue too little lease for an attempt while deliveries
    reserved by a later pass (later leases) wait behind it: none of them goes first."""
    settings = settings.model_copy(
        update={
            "webhook_max_per_endpoint": 1,
            "webhook_claim_ahead": 4,
            "webhook_timeout": 1.0,
            "webhook_first_byte_timeout": 1.0,
            "webhook_connect_timeout": 1.0,
            "webhook_lease_margin": 0.1,
        }
    )
    async with app_client(settings) as (_, state):
        account, _ = await new_account(state, "standard")
        with loopback_endpoints() as endpoints:
            endpoint = endpoints.add("ok", delay=0.3)
            ids = await due_deliveries(state, account, endpoint.url, 16)
            async with sending(state, settings):
                await until(lambda: len(endpoint.accepted) >= 16, 30, "every delivery")
        assert endpoint.max_active == 1
        assert [ids.index(i) for i in endpoint.accepted] == list(range(16))  # oldest first
        async with state.db.transaction(readonly=True) as session:
            [row] = await session.scalars(select(WebhookEndpoint))
            rows = list(await session.scalars(select(WebhookDelivery)))
        assert row.in_flight == 0
        assert {(r.state, r.attempts) for r in rows} == {("delivered", 1)}


async def one_sent_one_ahead(state: AppState, settings: Settings) -> tuple[claim.Due, datetime]:
    """Two due deliveries to one endpoint, the first claimed with its slot: the second, claimed
    ahead (reserved), and when it was claimed."""
    account, _ = await new_account(state, "standard")
    with loopback_endpoints() as endpoints:
        await due_deliveries(state, account, endpoints.add("ok").url, 2)
    now = utcnow()
    async with state.db.transaction() as session:
        [first] = await claim.claim_due(session, settings, 1, now)
        [ahead] = await claim.claim_ahead(session, settings, {first.endpoint_id}, now)
    return ahead, now


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_giving_back_locks_the_endpoint_before_its_deliveries(settings: Settings) -> None:
    """Endpoints are locked before their deliveries (`record`, `endpoints.enable`,
    `release_expired`); a pass that gives back reserved deliveries must too, or it deadlocks
    with them. While another transaction holds the endpoint, the pass waits without having
    touched the reserved delivery."""
    async with app_client(settings) as (_, state):
        ahead, now = await one_sent_one_ahead(state, settings)
        async with state.db.transaction() as holding:
            await holding.execute(
                select(WebhookEndpoint.id)
                .where(WebhookEndpoint.id == ahead.endpoint_id)
                .with_for_update()
            )
            giving_back = asyncio.create_task(
                claim_and_render(state.db, settings, state.storage, [], 0, now, unreserve=[ahead])
            )
            await asyncio.sleep(0.5)
            assert not giving_back.done()  # waiting for the endpoint ...
            async with state.db.transaction() as other:  # ... with the delivery still free
                locked = await other.scalar(
                    select(WebhookDelivery.id)
                    .where(WebhookDelivery.id == ahead.id)
                    .with_for_update(nowait=True)
                )
            assert locked == ahead.id
        assert await asyncio.wait_for(giving_back, 10) == []
        async with state.db.transaction(readonly=True) as session:
            row = await session.get(WebhookDelivery, ahead.id)
        assert row is not None and (row.lease_until, row.attempts) == (None, 0)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_slot_counted_under_a_lease_near_its_end_is_not_handed_on(
    settings: Settings,
) -> None:
    """Until a pass records a hand-over, the database counts the slot under the lease of the
    chain's earliest delivery whose result is not recorded. A post handed the slot must end
    before that lease does, or another sender's release_expired could give the slot back while
    it runs: with that lease too short, the chain ends, however long the next one's lease."""
    settings = settings.model_copy(
        update={"webhook_timeout": 1.0, "webhook_lease_margin": 0.1, "webhook_claim_ahead": 1}
    )
    async with app_client(settings) as (_, state):
        account, _ = await new_account(state, "standard")
        with loopback_endpoints() as endpoints:
            endpoint = endpoints.add("ok")
            await due_deliveries(state, account, endpoint.url, 2)
            now = utcnow()
            async with state.db.transaction() as session:
                [first] = await claim.claim_due(session, settings, 1, now)
                [ahead] = await claim.claim_ahead(session, settings, {first.endpoint_id}, now)
            sender = WebhookSender(settings, state.db, state.storage)
            sender.reserved[first.endpoint_id] = deque([Claimed(ahead, b"{}")])
            sender.sending[first.endpoint_id] = 1
            # Handed the slot earlier, its result unrecorded: 0.5 s of lease left, less than
            # an attempt (1 s) and the margin.
            short = replace(first, lease_until=utcnow() + timedelta(seconds=0.5))
            pools = Pools(settings)
            try:
                await sender.send(Claimed(short, b"{}"), pools, asyncio.Event())
            finally:
                await pools.aclose()
        assert endpoint.received == [first.id]
        assert [r.handed_to for r in sender.results] == [None]
        assert sender.give_back == [ahead] and not sender.reserved


async def test_a_failure_gives_back_the_reserved_deliveries_unsent(settings: Settings) -> None:
    """A post that fails gives its endpoint's reserved deliveries back unsent (no attempt
    counted), and so does a pass for those it claimed ahead while the post was failing."""
    settings = settings.model_copy(update={"webhook_claim_ahead": 2})
    async with app_client(settings) as (_, state):
        account, _ = await new_account(state, "standard")
        with loopback_endpoints() as endpoints:
            endpoint = endpoints.add("fail")
            ids = await due_deliveries(state, account, endpoint.url, 5)
            now = utcnow()
            async with state.db.transaction() as session:
                [first] = await claim.claim_due(session, settings, 1, now)
                ahead = await claim.claim_ahead(session, settings, {first.endpoint_id}, now)
            sender = WebhookSender(settings, state.db, state.storage)
            sender.reserved[first.endpoint_id] = deque(Claimed(d, b"{}") for d in ahead)
            sender.sending[first.endpoint_id] = 1
            pools = Pools(settings)
            try:
                await sender.send(Claimed(first, b"{}"), pools, asyncio.Event())
            finally:
                await pools.aclose()
            # A pass that started before the failure claimed the next one ahead.
            async with state.db.transaction() as session:
                later = await claim.claim_ahead(session, settings, {first.endpoint_id}, now)
            assert later and {d.id for d in later} <= set(ids[3:])
            assert sender.take([Claimed(d, b"{}") for d in later]) == []
        assert endpoint.received == [first.id]
        assert not sender.reserved and sender.wants_ahead([]) == set()
        assert sender.give_back == ahead + later
        await claim_and_render(
            state.db,
            settings,
            state.storage,
            sender.results,
            0,
            utcnow(),
            unreserve=sender.give_back,
        )
        async with state.db.transaction(readonly=True) as session:
            rows = {r.id: r for r in await session.scalars(select(WebhookDelivery))}
            [row] = await session.scalars(select(WebhookEndpoint))
        assert (rows[first.id].state, rows[first.id].attempts) == ("pending", 1)
        assert [(rows[i].state, rows[i].attempts, rows[i].lease_until) for i in ids[1:]] == [
            ("pending", 0, None)
        ] * 4
        assert (row.in_flight, row.consecutive_failures) == (0, 1)


async def test_recording_a_delivery_still_reserved_counts_its_attempt_without_a_slot(
    settings: Settings,
) -> None:
    """A reserved delivery sent on a hand-over that was never written (the finished one's
    result was lost) is recorded with its attempt counted; it held no slot of its own, so the
    endpoint's count is left alone."""
    settings = settings.model_copy(update={"webhook_claim_ahead": 1})
    async with app_client(settings) as (_, state):
        ahead, now = await one_sent_one_ahead(state, settings)
        ended = claim.Attempt(
            ahead.id, ahead.endpoint_id, ahead.lease_until, 200, None, True, now, 20
        )
        async with state.db.transaction() as session:
            [done] = await claim.record(session, settings, [ended], now)
        assert done.state == "delivered"
        async with state.db.transaction(readonly=True) as session:
            row = await session.get(WebhookDelivery, ahead.id)
            endpoint = await session.get(WebhookEndpoint, ahead.endpoint_id)
        assert row is not None and endpoint is not None
        assert (row.state, row.attempts, row.reserved, row.lease_until) == (
            "delivered",
            1,
            False,
            None,
        )
        assert endpoint.in_flight == 1  # still the first delivery's slot
