"""Two `easel services` processes share one PostgreSQL outbox: 1,000 deliveries to 10 loopback
endpoints are each delivered once (the receivers count webhook-ids), and no endpoint ever holds
more than EASEL_WEBHOOK_MAX_PER_ENDPOINT requests at once, counted over both senders."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.status import OrderStatus
from easel.db.tables import Order, WebhookDelivery, WebhookEndpoint
from easel.webhooks import outbox
from tests.support.app import new_account
from tests.support.endpoints import loopback_endpoints, wait_until
from tests.support.orders import submit_order
from tests.support.processes import cluster

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PER_ENDPOINT = 100
LIMIT = 4


async def enqueue_deliveries(settings: Settings, urls: list[str]) -> set[str]:
    """PER_ENDPOINT deliveries to each URL (two accounts, half the URLs each), interleaved in due
    order, all in one transaction; their webhook-ids."""
    state = AppState.build(settings)
    try:
        accounts = [(await new_account(state, "standard"))[0] for _ in range(2)]
        order_ids = [
            await submit_order(state, accounts[i % 2], webhook_url=url)
            for i, url in enumerate(urls)
        ]
        base = utcnow()
        async with state.db.transaction() as session:
            orders = [await session.get(Order, order_id) for order_id in order_ids]
            for n in range(PER_ENDPOINT):
                for k, order in enumerate(orders):
                    assert order is not None
                    at = base + timedelta(microseconds=n * len(orders) + k)
                    outbox.enqueue(session, order, outbox.event_for(OrderStatus.COMPLETED), at)
        async with state.db.transaction(readonly=True) as session:
            return set(await session.scalars(select(WebhookDelivery.id)))
    finally:
        await state.db.dispose()


async def outbox_after(settings: Settings) -> tuple[dict[str, int], list[int]]:
    state = AppState.build(settings)
    try:
        async with state.db.transaction(readonly=True) as session:
            by_state = dict(
                (row.state, row.count)
                for row in await session.execute(
                    select(WebhookDelivery.state, func.count().label("count")).group_by(
                        WebhookDelivery.state
                    )
                )
            )
            attempts = list(await session.scalars(select(WebhookDelivery.attempts).distinct()))
            in_flight = list(await session.scalars(select(WebhookEndpoint.in_flight)))
        assert set(in_flight) == {0}
        return by_state, attempts
    finally:
        await state.db.dispose()


def test_two_sender_processes_deliver_each_once_within_the_endpoint_limit(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=postgres_url,
        secret_key="senders-secret",
        allowed_networks=["127.0.0.0/8"],
    )
    with loopback_endpoints() as loopback:
        endpoints = [loopback.add("ok", delay=0.01) for _ in range(10)]
        with cluster(
            settings,
            tmp_path,
            EASEL_WEBHOOK_POLL_INTERVAL="0.1",
            EASEL_WEBHOOK_MAX_PER_ENDPOINT=str(LIMIT),
            # One sender could fill all 40 endpoint slots; with 24 each, both are needed, and
            # together (48) they contend for the endpoints' limits.
            EASEL_WEBHOOK_MAX_IN_FLIGHT="24",
        ) as c:
            for name in ("senders-1", "senders-2"):
                c.services(name)
            for name in ("senders-1", "senders-2"):
                wait_until(lambda n=name: "services started" in c.log(n), 60, f"{name} to start")
            expected = asyncio.run(enqueue_deliveries(settings, [e.url for e in endpoints]))
            started = time.monotonic()
            wait_until(
                lambda: sum(len(e.accepted) for e in endpoints) >= len(expected),
                45,
                "1,000 deliveries",
            )
            took = time.monotonic() - started
            time.sleep(0.5)  # room for a duplicate to show up
            for name, proc in c.procs.items():
                assert proc.poll() is None, f"{name} died:\n{c.log(name)}"
            sent = {
                name: (c.logs / f"{name}.log").read_text().count("webhook attempt")
                for name in c.procs
            }
        by_state, attempts = asyncio.run(outbox_after(settings))
    received = Counter(i for e in endpoints for i in e.received)
    assert len(expected) == 10 * PER_ENDPOINT
    assert set(received) == expected
    assert max(received.values()) == 1, received.most_common(3)
    assert max(e.max_active for e in endpoints) <= LIMIT, [e.max_active for e in endpoints]
    for e in endpoints:
        assert len(e.accepted) == PER_ENDPOINT
    assert by_state == {"delivered": len(expected)} and attempts == [1]
    assert sum(sent.values()) == len(expected) and min(sent.values()) > 0, sent  # both took part
    print(f"1,000 deliveries by two senders in {took:.2f} s: {sent}")
