"""Submit and status throughput: Easel over HTTP against the same transaction issued directly.

    .venv/bin/python bench/submit.py [--db sqlite|postgresql|both] [--requests N] [--concurrency C]

A real `easel serve --no-worker` subprocess per database; the direct baseline runs the same
services (build_request + submit, status reads) in this process, sequentially, with no HTTP.
PostgreSQL: EASEL_BENCH_POSTGRES_URL (an admin URL); a fresh database is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import databases

from easel.accounts.accounts import create_account
from easel.accounts.keys import create_key
from easel.accounts.ledger import top_up
from easel.api.state import AppState
from easel.clock import utcnow
from easel.config import Settings
from easel.db.migrate import migrate
from easel.db.tables import Account, Order
from easel.orders import lifecycle, queue
from easel.orders.request import build_request
from easel.orders.submit import submit

EASEL = Path(sys.executable).parent / "easel"  # the `easel` script of the running venv
PG_ADMIN = os.environ.get(
    "EASEL_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
STYLE, PROMPT, SIDE = "general", "bench", 512
BODY = {"style": STYLE, "prompt": PROMPT, "width": SIDE, "height": SIDE}
CREDITS = 10_000_000
WARMUP = 5


@dataclass
class Stats:
    per_s: float
    p50_ms: float
    p99_ms: float


def stats(latencies: list[float], elapsed: float) -> Stats:
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return Stats(len(ordered) / elapsed, pct(0.50), pct(0.99))


@contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp / 'easel.db'}"
        return
    url = asyncio.run(databases.create_database(PG_ADMIN))
    try:
        yield url
    finally:
        asyncio.run(databases.drop_database(url, PG_ADMIN))


def settings_for(url: str, tmp: Path) -> Settings:
    return Settings(data_dir=tmp, database_url=url, secret_key="bench-secret", log_level="WARNING")


async def prepare(settings: Settings) -> tuple[str, str]:
    """Migrate; one mega account per path (HTTP key, direct account id), both topped up."""
    state = AppState.build(settings)
    try:
        await migrate(state.db)
        made: list[str] = []
        for who in ("http", "direct"):
            async with state.db.transaction() as session:
                account = await create_account(session, state.catalog, f"{who}@bench", "mega")
                _, key = await create_key(session, account.id, who)
                await top_up(session, account.id, CREDITS, utcnow())
            made.append(key if who == "http" else account.id)
        return made[0], made[1]
    finally:
        await state.db.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(url: str, tmp: Path) -> Iterator[str]:
    port = free_port()
    env = os.environ | {
        "EASEL_DATA_DIR": str(tmp),
        "EASEL_DATABASE_URL": url,
        "EASEL_SECRET_KEY": "bench-secret",
        "EASEL_LOG_LEVEL": "WARNING",
        "EASEL_RATE_LIMITS": "false",  # the load is the point here, not the plan's limits
    }
    cmd = [str(EASEL), "serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port)]
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{(tmp / 'server.log').read_text()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def concurrently(
    n: int, c: int, one: Callable[[int], Awaitable[None]]
) -> tuple[list[float], float]:
    """Run one(i) for i in range(n) on c workers; each call's latency and the wall time."""
    latencies: list[float] = []
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:
            t0 = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(c)))
    return latencies, time.perf_counter() - start


async def over_http(base: str, key: str, n: int, c: int) -> tuple[Stats, Stats]:
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    headers = {"Authorization": f"Bearer {key}"}
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:

        async def post(_: int) -> None:
            r = await client.post("/api/v1/generate", json=BODY, timeout=60)
            assert r.status_code == 200, f"generate: {r.status_code} {r.text}"
            ids.append(r.json()["order_id"])

        async def get(i: int) -> None:
            r = await client.get(f"/api/v1/status/{ids[i]}", timeout=60)
            assert r.status_code == 200, f"status: {r.status_code} {r.text}"

        await concurrently(WARMUP, c, post)
        ids.clear()
        submits = stats(*await concurrently(n, c, post))
        return submits, stats(*await concurrently(n, c, get))


async def direct(settings: Settings, account_id: str, n: int) -> tuple[Stats, Stats]:
    state = AppState.build(settings)
    catalog = state.catalog
    model = catalog.style(STYLE)
    assert model is not None
    try:
        async with state.db.transaction() as session:
            account = await session.get_one(Account, account_id)
        ids: list[str] = []

        async def post(_: int) -> None:
            req = build_request(
                state.settings,
                dialect="native",
                model=model,
                model_alias=STYLE,
                product=catalog.products["static_image"],
                prompt=PROMPT,
                width=SIDE,
                height=SIDE,
                body=BODY,
            )
            async with state.db.transaction() as session:
                order, _ = await submit(session, catalog, account, req, utcnow())
            ids.append(order.id)

        async def get(i: int) -> None:
            async with state.db.transaction() as session:
                order = await session.scalar(select(Order).where(Order.id == ids[i]))
                assert order is not None
                await lifecycle.get_outputs(session, order.id)
                if order.status == "pending":
                    await queue.queue_position(session, order)

        await concurrently(WARMUP, 1, post)
        ids.clear()
        submits = stats(*await concurrently(n, 1, post))
        return submits, stats(*await concurrently(n, 1, get))
    finally:
        await state.db.dispose()


def bench(kind: str, n: int, c: int) -> list[list[str]]:
    tmp = Path(tempfile.mkdtemp(prefix="easel-bench-"))
    try:
        with database(kind, tmp) as url:
            settings = settings_for(url, tmp)
            key, direct_account = asyncio.run(prepare(settings))
            with server(url, tmp) as base:
                http = asyncio.run(over_http(base, key, n, c))
            baseline = asyncio.run(direct(settings, direct_account, n))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for op, h, d in zip(("submit", "status"), http, baseline, strict=True):
        nums = [h.per_s, h.p50_ms, h.p99_ms, d.per_s, d.p50_ms]
        rows.append([kind, op, *(f"{x:.1f}" for x in nums), f"{h.per_s / d.per_s:.2f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    n, c = args.requests, args.concurrency
    print(f"machine: {os.cpu_count()} CPUs, {sys.platform}; N={n} requests, C={c} concurrent")
    rows = [["database", "operation", "http req/s", "p50 ms", "p99 ms"]]
    rows[0] += ["direct tx/s", "direct p50 ms", "ratio"]
    for kind in kinds:
        rows += bench(kind, n, c)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    rows.insert(1, ["-" * w for w in widths])
    for row in rows:
        print(
            "  ".join(
                v.ljust(w) if i < 2 else v.rjust(w)
                for i, (w, v) in enumerate(zip(widths, row, strict=True))
            )
        )


if __name__ == "__main__":
    main()
