"""Wake-up latency: how long an idle worker takes to start an order after its submit commits.

    .venv/bin/python bench/wakeup.py [--orders N]

The real Worker runs in this process as an asyncio task; orders are submitted one at a time from
a separate Database (build_request + submit), each after the worker is idle plus a random 0-1 s
sleep. Latency = the order's started_at - time.time() right after the submit committed (the
worker shares this event loop, so a NOTIFY wake-up shows as well under 1 ms). The operator
catalog points sdxl-general at a missing folder, so each order is claimed and failed at once
(model_unavailable, refunded): no GPU or weights needed.
Modes: PostgreSQL LISTEN/NOTIFY (poll_interval 30 s, so only NOTIFY wakes the worker);
PostgreSQL polling (poll_interval 1.0 s, listener replaced by a no-op); SQLite polling (1.0 s).
PostgreSQL: EASEL_BENCH_POSTGRES_URL (an admin URL); a fresh database per mode, dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from sqlalchemy import select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import databases

from easel.accounts.accounts import create_account
from easel.accounts.ledger import top_up
from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.migrate import migrate
from easel.db.tables import Account, Order
from easel.orders import queue
from easel.orders.request import build_request
from easel.orders.submit import submit
from easel.worker.runner import Worker

os.environ["HF_HUB_OFFLINE"] = "1"  # set before the worker first imports diffusers / the hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no torchvision notices in the table

PG_ADMIN = os.environ.get(
    "EASEL_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
CATALOG = '[models.sdxl-general]\nsource = "/nonexistent/bench-weights"\n'
STYLE = "general"
TARGET_MS = 50.0
LISTENERS = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
)


@dataclass(frozen=True)
class Mode:
    name: str
    kind: str  # postgresql | sqlite
    poll_interval: float
    listen: bool


MODES = (
    Mode("postgresql LISTEN/NOTIFY", "postgresql", 30.0, True),
    Mode("postgresql polling 1.0 s", "postgresql", 1.0, False),
    Mode("sqlite polling 1.0 s", "sqlite", 1.0, False),
)


@asynccontextmanager
async def database(kind: str, tmp: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp / 'easel.db'}"
        return
    url = await databases.create_database(PG_ADMIN)
    try:
        yield url
    finally:
        await databases.drop_database(url, PG_ADMIN)


async def no_listener(dsn: str, wake: Callable[[], None], stop: asyncio.Event) -> None:
    """Stands in for queue.listen_for_orders in the polling baseline: never LISTENs."""
    await stop.wait()


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def one_order(
    client: AppState, account: Account, worker: Worker, task: asyncio.Task[None]
) -> float:
    """Submit one order to the idle worker; seconds from commit to the worker's started_at."""
    done = worker.processed + 1
    await asyncio.sleep(random.random())  # land at a random phase of the poll cycle
    model = client.catalog.style(STYLE)
    assert model is not None
    req = build_request(
        client.settings,
        dialect="native",
        model=model,
        model_alias=STYLE,
        product=client.catalog.products["static_image"],
        prompt="bench",
        width=512,
        height=512,
    )
    async with client.db.transaction() as session:
        order, _ = await submit(session, client.catalog, account, req, utcnow())
    committed = time.time()

    async def finished() -> bool:
        if task.done():
            task.result()
            raise RuntimeError("worker stopped")
        return worker.processed >= done

    await wait_for(finished, f"order {order.id}")
    async with client.db.transaction(readonly=True) as session:
        row = (
            await session.execute(
                select(Order.status, Order.error_code, Order.started_at).where(Order.id == order.id)
            )
        ).one()
    if row.status != "failed" or row.error_code != "model_unavailable" or not row.started_at:
        raise RuntimeError(f"order {order.id} ended {row.status}/{row.error_code}, not the path")
    return float(row.started_at.timestamp() - committed)


async def measure(mode: Mode, n: int) -> list[float]:
    tmp = Path(tempfile.mkdtemp(prefix="easel-wakeup-"))
    (tmp / "catalog.toml").write_text(CATALOG)
    try:
        async with database(mode.kind, tmp) as url:
            settings = Settings(
                data_dir=tmp,
                database_url=url,
                catalog=tmp / "catalog.toml",
                secret_key="bench-secret",
                log_level="WARNING",
                poll_interval=mode.poll_interval,
                device="cpu",
            )
            # Two states, as in production: the API's connections submit, the worker's claim.
            client, own = AppState.build(settings), AppState.build(settings)
            try:
                await migrate(client.db)
                async with client.db.transaction() as session:
                    account = await create_account(session, client.catalog, "w@bench", "mega")
                    await top_up(session, account.id, 1_000_000, utcnow())
                return await drive(
                    mode, client, Worker(settings, own.catalog, own.db, own.storage), account, n
                )
            finally:
                await client.db.dispose()
                await own.db.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def drive(
    mode: Mode, client: AppState, worker: Worker, account: Account, n: int
) -> list[float]:
    async def listeners(expected: int) -> bool:
        async with client.db.transaction() as session:
            return int(await session.scalar(LISTENERS) or 0) == expected

    stop = asyncio.Event()
    baseline = mock.patch.object(queue, "listen_for_orders", no_listener)
    with contextlib.nullcontext() if mode.listen else baseline:
        task = asyncio.create_task(worker.run(stop))
        try:
            if mode.listen:
                await wait_for(lambda: listeners(1), "the worker's LISTEN")
            await one_order(client, account, worker, task)  # warm-up: imports, pooled conns
            if mode.kind == "postgresql" and not await listeners(int(mode.listen)):
                raise RuntimeError(f"{mode.name}: unexpected LISTEN connection count")
            return [await one_order(client, account, worker, task) for _ in range(n)]
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=60)


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank, as bench/submit.py) in ms."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=30)
    n = parser.parse_args().orders
    print(f"machine: {os.cpu_count()} CPUs, {sys.platform}; N={n} orders per mode")
    results = {mode.name: asyncio.run(measure(mode, n)) for mode in MODES}
    print(f"{'mode':<26}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, lat in results.items():
        print(f"{name:<26}{pct(lat, 0.50):>9.1f}{pct(lat, 0.99):>9.1f}{max(lat) * 1000:>9.1f}")
    notify, polling = (pct(results[m.name], 0.50) for m in MODES[:2])
    notify_p99 = pct(results[MODES[0].name], 0.99)
    ratio = f"{polling / notify:.0f}x" if notify > 0 else "inf (NOTIFY p50 <= 0: below resolution)"
    print(f"ratio = polling p50 / LISTEN/NOTIFY p50 (PostgreSQL) = {ratio}")
    verdict = "yes" if notify_p99 < TARGET_MS else "NO"
    print(f"LISTEN/NOTIFY p99 under {TARGET_MS:.0f} ms target: {verdict} ({notify_p99:.1f} ms)")


if __name__ == "__main__":
    main()
