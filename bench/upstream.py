"""Upstream orders: Easel's remote worker against direct httpx calls to the same provider.

    .venv/bin/python bench/upstream.py [--db sqlite|postgresql|both] [--in-flight 1,16,64]
                                       [--orders-per-slot 6] [--ms 500] [--safety-check]
                                       [--repeat 1]

A loopback OpenAI-compatible provider (tests/support/providers.py, in a process of its own so it
does not share this one's interpreter lock) answers every image request after a fixed 500 ms,
plus its own cost of making the PNG and the HTTP exchange, which both sides below pay alike.
Easel's side: N orders of an upstream model whose one channel is that provider with
max_in_flight = C, run by the real worker (claim, attempt rows, submit, store the image, complete)
in this process on SQLite or PostgreSQL (EASEL_BENCH_POSTGRES_URL, an admin URL: a fresh database
per round, dropped after). The baseline makes the same N calls with one httpx client at the same
concurrency.

Easel's added latency per order = its time from claim to completion (completed_at - started_at)
minus the median time of a direct call at the same concurrency: what Easel adds to the same work,
not the provider's own overhead (subtracting only the 500 ms used to count that twice).

The orders say safety_check=false, which the bench's plans allow (safety_optional, the default):
the output safety check is a per-image ResNet-50 (about 45 ms of CPU for a 256x256 image on this
machine's CPU, more than everything else Easel does per order), whose cost is the classifier's,
not the worker's path this bench measures. It is not hidden: after the table, one row runs the
top concurrency again with the check on (`--safety-check` runs the whole table so), and
docs/performance.md gives both. Goal: added p50 under 20 ms, throughput at 64 in flight at least
0.8x the direct calls.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import databases, providers

from easel.accounts.accounts import create_account
from easel.accounts.ledger import top_up
from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.migrate import migrate
from easel.db.status import FINAL
from easel.db.tables import Order
from easel.orders.request import build_request
from easel.orders.submit import submit
from easel.services.host import run_services
from easel.worker.runner import Worker

MODEL = "up-bench"
ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get(
    "EASEL_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)

SERVE_PROVIDER = """
import sys, time
from tests.support import providers
with providers.provider("openai", job_seconds=float(sys.argv[1])) as p:
    print(p.url, flush=True)
    sys.stdin.read()
"""


def catalog(path: Path, url: str, in_flight: int) -> Path:
    channel = providers.channel_table(
        MODEL, "openai", f"{url}/v1", "m", max_in_flight=in_flight, timeout_seconds=60
    )
    plans = "".join(
        f"[plans.{p}]\nmax_running = 1000\n" for p in ("free", "standard", "pro", "mega")
    )
    path.write_text(providers.upstream_model(MODEL, channel) + plans)
    return path


async def easel_round(
    db: str, url: str, in_flight: int, n: int, safety_check: bool
) -> tuple[float, list[float]]:
    """(orders/s from the worker's start to the last completion, ms per order from its claim
    to its completion)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if db == "sqlite":
            database_url = await asyncio.to_thread(databases.sqlite_url, root)
        else:
            database_url = await databases.create_database(PG_ADMIN)
        try:
            return await _easel_round(root, database_url, url, in_flight, n, safety_check)
        finally:
            if db != "sqlite":
                await databases.drop_database(database_url, PG_ADMIN)


async def _easel_round(
    root: Path, database_url: str, url: str, in_flight: int, n: int, safety_check: bool
) -> tuple[float, list[float]]:
    settings = Settings(
        data_dir=root / "data",
        database_url=database_url,
        secret_key="bench-secret-key",
        catalog=catalog(root / "catalog.toml", url, in_flight),
        poll_interval=0.05,
        progress_interval=0.0,
        rate_limits=False,
        allowed_networks=["127.0.0.0/8"],
    )
    state = AppState.build(settings)
    try:
        await migrate(state.db)  # PostgreSQL's fresh database; SQLite's is migrated already
        model = state.catalog.models[MODEL]
        async with state.db.transaction() as session:
            account = await create_account(session, state.catalog, "b@example.com", "mega")
            await top_up(session, account.id, n * 10, utcnow())
        for i in range(n):
            req = build_request(
                settings,
                dialect="native",
                model=model,
                model_alias=MODEL,
                product=state.catalog.products["static_image"],
                prompt=f"order {i}",
                width=256,
                height=256,
                n=1,
                seed=i,
                safety_check=safety_check,
            )
            async with state.db.transaction() as session:
                await submit(session, state.catalog, account, req, utcnow())
        worker = Worker(settings, state.catalog, state.db, state.storage, models=[MODEL])
        stop = asyncio.Event()
        began = utcnow()
        task = asyncio.create_task(run_services(worker.services(), stop))
        # A count of unfinished orders, seldom (the bench must not load the process it times:
        # the time taken is read from the last completed_at, so polling seldom costs nothing).
        unfinished = select(func.count()).select_from(Order).where(Order.status.not_in(FINAL))
        while True:
            async with state.db.transaction(readonly=True) as session:
                left = await session.scalar(unfinished)
            if not left:
                break
            await asyncio.sleep(0.25)
        async with state.db.transaction(readonly=True) as session:
            rows = list(await session.scalars(select(Order)))
        stop.set()
        await task
        bad = [o for o in rows if o.status != "completed"]
        if bad:
            raise SystemExit(f"{len(bad)} orders did not complete: {bad[0].error_message}")
        last = max(o.completed_at for o in rows if o.completed_at)
        elapsed = (last - began).total_seconds()
        took = [
            (o.completed_at - o.started_at).total_seconds() * 1000
            for o in rows
            if o.completed_at and o.started_at
        ]
        return n / elapsed, took
    finally:
        await state.db.dispose()


async def direct_round(url: str, in_flight: int, n: int) -> tuple[float, list[float]]:
    """(calls/s, ms per call)."""
    body = {"model": "m", "prompt": "x", "n": 1, "size": "256x256", "response_format": "b64_json"}
    headers = {"authorization": f"Bearer {providers.KEY}"}
    gate = asyncio.Semaphore(in_flight)
    took: list[float] = []
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    async with httpx.AsyncClient(trust_env=False, limits=limits, timeout=60) as client:

        async def one() -> None:
            async with gate:
                start = time.monotonic()
                response = await client.post(
                    f"{url}/v1/images/generations", json=body, headers=headers
                )
                response.raise_for_status()
                response.json()
                took.append((time.monotonic() - start) * 1000)

        began = time.monotonic()
        await asyncio.gather(*(one() for _ in range(n)))
        return n / (time.monotonic() - began), took


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


async def row(
    db: str, url: str, level: int, n: int, seconds: float, safety_check: bool, repeat: int
) -> str:
    """One line: each figure the median over `repeat` pairs of rounds (direct, then Easel)."""
    figures: list[tuple[float, ...]] = []
    for _ in range(repeat):
        direct_rate, direct_ms = await direct_round(url, level, n)
        easel_rate, easel_ms = await easel_round(db, url, level, n, safety_check)
        direct_p50 = statistics.median(direct_ms)
        added = [ms - direct_p50 for ms in easel_ms]  # over the same call made directly
        provider = [ms - seconds * 1000 for ms in direct_ms]  # the provider's own overhead
        figures.append(
            (
                easel_rate,
                direct_rate,
                easel_rate / direct_rate,
                statistics.median(added),
                p95(added),
                statistics.median(provider),
                p95(provider),
            )
        )
    rate, direct, ratio, added_p50, added_p95, own_p50, own_p95 = (
        statistics.median(f[i] for f in figures) for i in range(7)
    )
    return (
        f"{db:<11}{level:>9}{n:>8}{'on' if safety_check else 'off':>8}{rate:>10.1f}"
        f"{direct:>11.1f}{ratio:>7.2f}{added_p50:>15.1f}{added_p95:>7.1f}"
        f"{own_p50:>16.1f}{own_p95:>7.1f}"
    )


async def run(
    dbs: list[str],
    levels: list[int],
    per_slot: int,
    seconds: float,
    safety_check: bool,
    repeat: int,
) -> None:
    os.environ["EASEL_TEST_PROVIDER_KEY"] = providers.KEY  # the channel's api_key_env
    root = ROOT
    proc = subprocess.Popen(  # noqa: ASYNC220 - the provider, for the whole run
        [sys.executable, "-c", SERVE_PROVIDER, str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env=os.environ | {"PYTHONPATH": str(root)},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        print(f"provider: {url}, {seconds * 1000:.0f} ms per answer; Easel in one process")
        print(
            f"{'database':<11}{'in flight':>9}{'orders':>8}{'safety':>8}{'easel /s':>10}"
            f"{'direct /s':>11}{'ratio':>7}{'added ms p50':>15}{'p95':>7}"
            f"{'provider +ms':>16}{'p95':>7}"
        )
        for db in dbs:
            for level in levels:
                n = max(20, level * per_slot)
                print(await row(db, url, level, n, seconds, safety_check, repeat))
            if not safety_check:  # the product's cost of the check, shown beside it
                top = max(levels)
                print(await row(db, url, top, max(20, top * per_slot), seconds, True, 1))
        print(
            "\n(added: Easel's claim-to-completion time minus a direct call's median at the same"
            " concurrency;\n provider +ms: a direct call's time over the provider's fixed wait;"
            "\n goal: added p50 under 20 ms, ratio at 64 in flight >= 0.8 with the check off)"
        )
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--in-flight", default="1,16,64")
    parser.add_argument("--orders-per-slot", type=int, default=6)
    parser.add_argument("--ms", type=float, default=500)
    parser.add_argument(
        "--safety-check", action="store_true", help="every row with the output safety check on"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="pairs of rounds per row; each figure their median"
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.in_flight.split(",")]
    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    asyncio.run(
        run(dbs, levels, args.orders_per_slot, args.ms / 1000, args.safety_check, args.repeat)
    )


if __name__ == "__main__":
    main()
