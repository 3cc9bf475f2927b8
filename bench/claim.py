"""The claim statement at 1k and 100k pending orders: p50/p99 per claim and the query plan.

    .venv/bin/python bench/claim.py [--db sqlite|postgresql|both] [--sizes 1000,100000]
                                    [--claims 200] [--accounts 100] [--explain]

Pending orders are spread over `--accounts` accounts on the standard, pro and mega plans (three
priorities) and three models, as a busy shared server would hold them. Each timed claim is one
worker's `claim_next` transaction (serving every model, holding one loaded); after it the order
is finished and its running slot given back (not timed), so running caps never block the head.
The ratio column is p99 at the largest size over p99 at the smallest (goal: within 2x).
PostgreSQL: EASEL_BENCH_POSTGRES_URL (an admin URL); a fresh database is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text, update

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from easel.accounts.accounts import create_account, release_running_slot
from easel.catalog import Catalog, load_catalog
from easel.clock import utcnow
from easel.db.engine import Database
from easel.db.migrate import migrate
from easel.db.status import OrderStatus
from easel.db.tables import Order
from easel.orders import queue
from submit import database  # one fresh database per run, for every bench

PLANS = ("standard", "pro", "mega")
MODELS = ("sdxl-general", "sdxl-anime", "sdxl-turbo")
CHUNK = 5000
WARMUP = 10


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def order_rows(
    catalog: Catalog, accounts: list[tuple[str, str]], n: int
) -> Iterator[dict[str, Any]]:
    """`n` pending orders, round-robin over the accounts and models, one second apart."""
    start = utcnow() - timedelta(seconds=n)
    for i in range(n):
        account_id, plan = accounts[i % len(accounts)]
        yield {
            "id": f"ORD-BENCH-{i:010d}",
            "account_id": account_id,
            "dialect": "native",
            "model": MODELS[i % len(MODELS)],
            "model_alias": "general",
            "product_type": "static_image",
            "task_type": "image",
            "prompt": "bench",
            "negative_prompt": "",
            "width": 512,
            "height": 512,
            "n": 1,
            "frames": 0,
            "steps": 2,
            "guidance": 5.0,
            "seed": i,
            "acceleration": "none",
            "output_format": "png",
            "llm_enhance": False,
            "safety_check": False,
            "dialect_data": {},
            "webhook_on_start": False,
            "status": OrderStatus.PENDING,
            "progress": 0,
            "step": 0,
            "total_steps": 2,
            "priority": catalog.plans[plan].priority,
            "fair_seq": i // len(accounts),  # as submit gives them: each account's k-th at k
            "cost_credits": 1,
            "attempts": 0,
            "cancel_requested": False,
            "created_at": start + timedelta(seconds=i),
        }


async def fill(db: Database, catalog: Catalog, n_accounts: int, n: int) -> None:
    accounts: list[tuple[str, str]] = []
    async with db.transaction() as session:
        for i in range(n_accounts):
            plan = PLANS[i % len(PLANS)]
            account = await create_account(session, catalog, f"a{i}@bench", plan)
            accounts.append((account.id, plan))
    batch: list[dict[str, Any]] = []
    for row in order_rows(catalog, accounts, n):
        batch.append(row)
        if len(batch) == CHUNK:
            async with db.transaction() as session:
                await session.execute(insert(Order), batch)
            batch = []
    if batch:
        async with db.transaction() as session:
            await session.execute(insert(Order), batch)
    async with db.connect() as conn:
        await conn.execute(text("ANALYZE"))
        await conn.commit()


async def explain(db: Database) -> list[str]:
    now = utcnow()
    params = {
        "worker_id": "bench",
        "lease_until": now,
        "now": now,
        "passed_over_since": now - timedelta(seconds=60),
    }
    async with db.connect() as conn:
        if db.is_sqlite:
            sql = str(queue.CLAIM_NEXT_SQLITE.text)
            params |= {"models": None, "loaded": f'["{MODELS[0]}"]'}
            rows = await conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"), params)
            lines = [str(r[-1]) for r in rows]
        else:
            sql = str(queue.CLAIM_NEXT_POSTGRESQL.text)
            params |= {"models": None, "loaded": [MODELS[0]], "probe": [MODELS[0]]}
            stmt = text(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {sql}").bindparams(
                *queue.CLAIM_NEXT_POSTGRESQL._bindparams.values()
            )
            rows = await conn.execute(stmt, params)
            lines = [str(r[0]) for r in rows]
        await conn.rollback()
    return lines


async def claims(db: Database, count: int) -> list[float]:
    """Seconds per claim transaction; each claimed order is then finished (not timed)."""
    lease = timedelta(seconds=60)
    latencies: list[float] = []
    for i in range(count + WARMUP):
        t0 = time.perf_counter()
        async with db.transaction() as session:
            order = await queue.claim_next(
                session,
                "bench-worker",
                utcnow(),
                lease,
                loaded=[MODELS[0]],
                prefer_loaded_for=timedelta(seconds=60),
            )
        elapsed = time.perf_counter() - t0
        assert order is not None, "the queue ran dry"
        if i >= WARMUP:
            latencies.append(elapsed)
        async with db.transaction() as session:
            await session.execute(
                update(Order)
                .where(Order.id == order.id)
                .values(status=OrderStatus.COMPLETED, completed_at=utcnow())
            )
            await release_running_slot(session, order.account_id)
    return latencies


def bench(kind: str, size: int, args: argparse.Namespace) -> tuple[float, float, list[str]]:
    tmp = Path(tempfile.mkdtemp(prefix="easel-claim-"))
    try:
        with database(kind, tmp) as url:

            async def run() -> tuple[list[float], list[str]]:
                db = Database(url)
                try:
                    await migrate(db)
                    await fill(db, load_catalog(None), args.accounts, size)
                    plan = await explain(db) if args.explain else []
                    return await claims(db, args.claims), plan
                finally:
                    await db.dispose()

            latencies, plan = asyncio.run(run())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return pct(latencies, 0.5), pct(latencies, 0.99), plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--claims", type=int, default=200)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--explain", action="store_true", help="print each query plan")
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"machine: {os.cpu_count()} CPUs; {args.claims} claims per size, "
        f"{args.accounts} accounts, {len(MODELS)} models, {len(PLANS)} priorities"
    )
    rows = [["database", "pending", "p50 ms", "p99 ms", f"p99 / p99 at {sizes[0]}"]]
    for kind in kinds:
        base = None
        for size in sizes:
            p50, p99, plan = bench(kind, size, args)
            base = base or p99
            rows.append([kind, str(size), f"{p50:.2f}", f"{p99:.2f}", f"{p99 / base:.2f}"])
            for line in plan:
                print(f"  [{kind} {size}] {line}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    rows.insert(1, ["-" * w for w in widths])
    for row in rows:
        print(
            "  ".join(
                v.ljust(w) if i == 0 else v.rjust(w)
                for i, (w, v) in enumerate(zip(widths, row, strict=True))
            )
        )


if __name__ == "__main__":
    main()
