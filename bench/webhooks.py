"""Webhook sender throughput: Easel's sender against direct httpx posts at the same concurrency.

    .venv/bin/python bench/webhooks.py [--db sqlite|postgresql|both] [--deliveries N]
                                       [--endpoints 10] [--delay-ms 50] [--rounds 3]

Ten healthy loopback endpoints (a process of their own) answer each POST after 50 ms. Easel's
side is the real sender service (`WebhookSender`, as `easel services` runs it) in this process,
delivering N outbox rows: claimed from the database, rendered in the order's dialect, signed,
posted and recorded. The baseline posts the same number of signed bodies of the same size with
one httpx client in this process at the same concurrency (EASEL_WEBHOOK_MAX_PER_ENDPOINT per
endpoint, at most EASEL_WEBHOOK_MAX_IN_FLIGHT in all). Each figure is the median of --rounds
alternating rounds. Goal: ratio >= 0.8.

Easel's time ends when the sender has recorded the N-th delivery as delivered, read from its own
counter (easel_webhook_attempts{result="delivered"}) every 5 ms. Until 2026-12-05 the bench
counted delivered rows with a database query every 50 ms in the sender's process, which took
about 2 ms of its event loop and a database connection each time (PostgreSQL): a cost the
sender does not have in service.
PostgreSQL: EASEL_BENCH_POSTGRES_URL (an admin URL); a fresh database is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
from prometheus_client import REGISTRY

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from easel.accounts.accounts import create_account
from easel.accounts.ledger import top_up
from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.migrate import migrate
from easel.db.status import OrderStatus
from easel.orders.request import build_request
from easel.orders.submit import submit
from easel.services.webhook_sender import WebhookSender, client_for
from easel.webhooks import outbox, signing
from submit import database  # one fresh database per run, for every bench

# Runs in a child process: the endpoints must not share this process's interpreter lock.
SERVE_ENDPOINTS = """
import sys, time
from tests.support.endpoints import Endpoints
endpoints = Endpoints()
urls = [endpoints.add("ok", delay=float(sys.argv[2])).url for _ in range(int(sys.argv[1]))]
print(" ".join(urls), flush=True)
sys.stdin.read()
endpoints.close()
"""


@dataclass
class Row:
    name: str
    deliveries: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.deliveries / self.seconds


@contextmanager
def loopback_endpoints(count: int, delay: float) -> Iterator[list[str]]:
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE_ENDPOINTS, str(count), str(delay)],
        cwd=root,
        env=os.environ | {"PYTHONPATH": str(root)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().split()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def settings_for(url: str, tmp: Path) -> Settings:
    return Settings(
        data_dir=tmp,
        database_url=url,
        secret_key="bench-secret",
        log_level="WARNING",
        allowed_networks=["127.0.0.0/8"],
        webhook_poll_interval=0.05,
    )


async def enqueue(settings: Settings, urls: list[str], n: int) -> bytes:
    """`n` due deliveries spread over `urls` (one order per URL, rows interleaved in due order);
    a body of the size the sender will render, for the baseline."""
    state = AppState.build(settings)
    try:
        await migrate(state.db)
        model = state.catalog.style("general")
        assert model is not None
        async with state.db.transaction() as session:
            account = await create_account(session, state.catalog, "bench@hooks", "mega")
            await top_up(session, account.id, 10_000_000, utcnow())
        orders = []
        for url in urls:
            req = build_request(
                settings,
                dialect="native",
                model=model,
                model_alias="general",
                product=state.catalog.products["static_image"],
                prompt="bench",
                width=512,
                height=512,
                body={},
                webhook_url=url,
            )
            async with state.db.transaction() as session:
                order, _ = await submit(session, state.catalog, account, req, utcnow())
                orders.append(order)
        base = utcnow()
        event = outbox.event_for(OrderStatus.COMPLETED)
        async with state.db.transaction() as session:
            for order in orders:  # completed, as the worker leaves them (no outputs)
                session.add(order)
                order.status, order.completed_at, order.progress = OrderStatus.COMPLETED, base, 100
            for i in range(n):
                order = orders[i % len(orders)]
                outbox.enqueue(session, order, event, base + timedelta(microseconds=i))
        body = {"order_id": orders[0].id, "status": "completed", "output_urls": []}
        return json.dumps(body, separators=(",", ":")).encode()
    finally:
        await state.db.dispose()


def recorded_delivered() -> float:
    """The sender's count of attempts it recorded as delivered (this process)."""
    labels = {"result": "delivered"}
    return REGISTRY.get_sample_value("easel_webhook_attempts_total", labels) or 0.0


async def easel_sender(settings: Settings, n: int) -> Row:
    state = AppState.build(settings)
    stop = asyncio.Event()
    try:
        sender = WebhookSender(settings, state.db, state.storage)
        before = recorded_delivered()
        start = time.perf_counter()
        task = asyncio.create_task(sender.run(stop))
        while recorded_delivered() - before < n:
            await asyncio.sleep(0.005)
            if task.done():
                task.result()
        elapsed = time.perf_counter() - start
        stop.set()
        await task
        return Row("easel sender", n, elapsed)
    finally:
        await state.db.dispose()


async def direct_httpx(settings: Settings, urls: list[str], n: int, body: bytes) -> Row:
    per_endpoint = settings.webhook_max_per_endpoint
    workers = [(url, k) for k in range(per_endpoint) for url in urls]
    workers = workers[: settings.webhook_max_in_flight]
    todo = iter(range(n))
    secret = signing.new_secret()

    async def worker(client: httpx.AsyncClient, url: str) -> None:
        for i in todo:
            headers = signing.headers(secret, f"msg_{i}", int(time.time()), body)
            r = await client.post(url, content=body, headers=headers)
            assert r.status_code == 200, r.status_code

    async with client_for(settings) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client, url) for url, _ in workers))
        return Row("direct httpx", n, time.perf_counter() - start)


def run(kind: str, n: int, count: int, delay: float, rounds: int) -> tuple[float, float, int]:
    """Median deliveries/s of each side over `rounds` alternating rounds (a fresh outbox each)."""
    sender_rates: list[float] = []
    baseline_rates: list[float] = []
    concurrency = 0
    with loopback_endpoints(count, delay) as urls:
        for _ in range(rounds):
            tmp = Path(tempfile.mkdtemp(prefix="easel-bench-hooks-"))
            try:
                with database(kind, tmp) as url:
                    settings = settings_for(url, tmp)
                    body = asyncio.run(enqueue(settings, urls, n))
                    concurrency = min(
                        settings.webhook_max_in_flight, count * settings.webhook_max_per_endpoint
                    )
                    baseline_rates.append(asyncio.run(direct_httpx(settings, urls, n, body)).per_s)
                    sender_rates.append(asyncio.run(easel_sender(settings, n)).per_s)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return statistics.median(sender_rates), statistics.median(baseline_rates), concurrency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="median of this many rounds")
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    print(
        f"{args.deliveries} deliveries to {args.endpoints} loopback endpoints answering in "
        f"{args.delay_ms:g} ms\n"
    )
    print(f"{'database':<11}{'concurrency':>12}{'easel /s':>11}{'httpx /s':>11}{'ratio':>8}")
    for kind in kinds:
        sender, baseline, concurrency = run(
            kind, args.deliveries, args.endpoints, args.delay_ms / 1000, args.rounds
        )
        print(
            f"{kind:<11}{concurrency:>12}{sender:>11.0f}{baseline:>11.0f}{sender / baseline:>7.2f}x"
        )
    ideal = min(64, args.endpoints * 4) / (args.delay_ms / 1000)
    print(f"\n(ideal at this concurrency: {ideal:.0f}/s; goal: ratio >= 0.8)")


if __name__ == "__main__":
    main()
