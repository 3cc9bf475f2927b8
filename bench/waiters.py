"""The cost of waiting: submits and /healthz while clients wait on event streams and OpenAI calls.

    .venv/bin/python bench/waiters.py [--db sqlite|postgresql|both] [--streams 0,200,1000]
                                      [--waits 100] [--submits 40] [--complete 100]

A real `easel serve --no-worker --no-services` subprocess per database, no worker while it
measures (orders stay pending, so every waiter keeps waiting). For each number of open SSE
streams (each on an order of its own) plus `--waits` OpenAI synchronous calls, opened 50 at a time
(again after a 503, as clients do), it waits 2 s and 5 warm-up submits past the burst of openings,
then times `--submits` submits (p50, p99) and /healthz calls (p50), beside the same with nobody
waiting, and
counts the database statements per second that the waiters cause over a quiet 5 s: the change
feed's own counter (/healthz `change_feed_reads`, every statement waiting causes), and on
PostgreSQL also pg_stat_database.xact_commit deltas (every transaction of the database).
Then `--complete` orders, each followed by a stream, are run by an `easel worker` on a tiny
random-weight SDXL pipeline: every stream must end with `completed` and its output URLs.
PostgreSQL: EASEL_BENCH_POSTGRES_URL (an admin URL); a fresh database is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.submit import BODY, database, free_port, prepare, settings_for
from tests.support.catalogs import tiny_catalog
from tests.support.sse import read_events

EASEL = Path(sys.executable).parent / "easel"
OPENAI = {"model": "dall-e-3", "prompt": "bench", "size": "1024x1024"}
QUIET_SECONDS = 5.0


@dataclass
class Row:
    db: str
    streams: int
    waits: int
    submit_p50: float
    submit_p99: float
    healthz_p50: float
    feed_reads_per_s: float
    commits_per_s: float  # PostgreSQL: every transaction of the database, idle backends included


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("w") as out:
        proc = subprocess.Popen([str(EASEL), *args], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def environment(url: str, tmp: Path, catalog: Path | None = None) -> dict[str, str]:
    env = os.environ | {
        "EASEL_DATA_DIR": str(tmp),
        "EASEL_DATABASE_URL": url,
        "EASEL_SECRET_KEY": "bench-secret",
        "EASEL_LOG_LEVEL": "WARNING",
        "EASEL_RATE_LIMITS": "false",  # the waiting is the point here, not the plan's limits
        "EASEL_OPENAI_WAIT_TIMEOUT": "3600",
        "EASEL_MAX_WAITERS": "5000",
        "EASEL_POLL_INTERVAL": "0.2",
        "HF_HUB_OFFLINE": "1",
    }
    if catalog is not None:
        env["EASEL_CATALOG"] = str(catalog)
    return env


@contextmanager
def api_server(env: dict[str, str], tmp: Path) -> Iterator[str]:
    port = free_port()
    args = ["serve", "--no-worker", "--no-services", "--host", "127.0.0.1", "--port", str(port)]
    with process(args, env, tmp / "server.log") as proc:
        base = f"http://127.0.0.1:{port}"
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


async def xact_commits(url: str) -> int:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await asyncio.sleep(1.1)  # statistics are reported about once a second
        value = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(value)
    finally:
        await conn.close()


async def waiter_queries(client: httpx.AsyncClient, kind: str, url: str) -> tuple[float, float]:
    """Over a quiet window (no submits): the change feed's statements per second (its counter,
    /healthz), and on PostgreSQL the database's committed transactions per second."""
    if kind == "postgresql":
        await asyncio.sleep(11)  # idle backends report their statistics within 10 s
        before = await xact_commits(url)
    reads = (await client.get("/healthz")).json()["change_feed_reads"]
    started = time.monotonic()
    await asyncio.sleep(QUIET_SECONDS)
    reads = (await client.get("/healthz")).json()["change_feed_reads"] - reads
    elapsed = time.monotonic() - started
    if kind == "sqlite":
        return reads / elapsed, float("nan")
    await asyncio.sleep(11)
    after = await xact_commits(url)
    # minus our own: two /healthz calls, two statistics reads
    return reads / elapsed, max(0, after - before - 4) / (elapsed + 11 + 1.1)


async def measure(client: httpx.AsyncClient, submits: int) -> tuple[float, float, float]:
    posts: list[float] = []
    checks: list[float] = []
    for _ in range(submits):
        t0 = time.perf_counter()
        r = await client.post("/api/v1/generate", json=BODY, timeout=120)
        posts.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text
        t0 = time.perf_counter()
        r = await client.get("/healthz", timeout=120)
        checks.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text
        await asyncio.sleep(0.02)
    return pct(posts, 0.5), pct(posts, 0.99), pct(checks, 0.5)


async def waiters_until(client: httpx.AsyncClient, done: Callable[[int], bool]) -> None:
    """Until the server's count of waiters (/healthz) satisfies `done`."""
    for _ in range(1500):
        if done((await client.get("/healthz")).json()["waiters"]):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the server's waiters did not reach the expected count")


OPENING_AT_ONCE = 50  # clients arrive 50 at a time, as a ramp rather than a wall


async def open_stream(
    client: httpx.AsyncClient, order_id: str, opened: asyncio.Event, opening: asyncio.Semaphore
) -> None:
    """Follow the order's events, opening the stream again after a 503 as a client would."""
    while True:
        async with opening:
            response = await client.send(
                client.build_request("GET", f"/api/v1/orders/{order_id}/events"), stream=True
            )
        try:
            if response.status_code == 503:
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                continue
            assert response.status_code == 200, response.status_code
            async for _ in read_events(response):
                opened.set()
            return
        finally:
            await response.aclose()


async def openai_wait(client: httpx.AsyncClient, opening: asyncio.Semaphore) -> None:
    """A synchronous OpenAI call, sent again after a 503 (nothing was charged then)."""
    while True:
        async with opening:
            task = asyncio.ensure_future(client.post("/v1/images/generations", json=OPENAI))
            await asyncio.sleep(0.01)
        response = await task
        if response.status_code != 503:
            return
        await asyncio.sleep(float(response.headers.get("retry-after", "1")))


async def run_phases(
    kind: str, url: str, base: str, key: str, counts: list[int], waits: int, submits: int
) -> list[Row]:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=max(counts) + waits + 50, max_keepalive_connections=0)
    rows: list[Row] = []
    async with (
        httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client,
        httpx.AsyncClient(base_url=base, headers=headers, timeout=None, limits=limits) as held,
    ):
        await measure(client, 5)  # warm up
        p50, p99, health = await measure(client, submits)
        rows.append(Row(kind, 0, 0, p50, p99, health, *await waiter_queries(client, kind, url)))
        for streams in counts:
            orders = [
                (await client.post("/api/v1/generate", json=BODY)).json()["order_id"]
                for _ in range(streams)
            ]
            opened = [asyncio.Event() for _ in orders]
            opening = asyncio.Semaphore(OPENING_AT_ONCE)
            tasks = [
                asyncio.create_task(open_stream(held, o, e, opening))
                for o, e in zip(orders, opened, strict=True)
            ]
            tasks += [asyncio.create_task(openai_wait(held, opening)) for _ in range(waits)]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened)), 300)
            want = streams + waits
            await waiters_until(client, lambda n, want=want: n >= want)
            await asyncio.sleep(2)  # steady state: the burst of openings is over
            await measure(client, 5)  # the first submit after the burst is not the steady state
            p50, p99, health = await measure(client, submits)
            queries = await waiter_queries(client, kind, url)
            rows.append(Row(kind, streams, waits, p50, p99, health, *queries))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await waiters_until(client, lambda n: n == 0)  # dropped once their clients left
    return rows


async def follow_to_the_end(base: str, key: str, n: int, env: dict[str, str], tmp: Path) -> int:
    """`n` orders, one stream each, run by a worker; how many streams ended `completed` with
    output URLs."""
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=0)
    body = BODY | {"width": 256, "height": 256}
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=None, limits=limits
    ) as client:
        orders = [
            (await client.post("/api/v1/generate", json=body)).json()["order_id"] for _ in range(n)
        ]

        async def last_event(order_id: str) -> tuple[str, Any]:
            path = f"/api/v1/orders/{order_id}/events"
            async with client.stream("GET", path) as response:
                events = [e async for e in read_events(response)]
            return events[-1].name, events[-1].data

        streams = [asyncio.create_task(last_event(o)) for o in orders]
        await asyncio.sleep(1)
        with process(["worker"], env, tmp / "worker.log"):
            ends = await asyncio.wait_for(asyncio.gather(*streams), 1800)
    return sum(1 for name, data in ends if name == "completed" and data.get("output_urls"))


def run(kind: str, args: argparse.Namespace, model: Path | None) -> tuple[list[Row], str]:
    tmp = Path(tempfile.mkdtemp(prefix=f"easel-waiters-{kind}-"))
    try:
        with database(kind, tmp) as url:
            key, _ = asyncio.run(prepare(settings_for(url, tmp)))
            with api_server(environment(url, tmp), tmp) as base:
                counts = [int(c) for c in args.streams.split(",") if c.strip()]
                rows = asyncio.run(
                    run_phases(kind, url, base, key, counts, args.waits, args.submits)
                )
        done = ""
        if model is not None and args.complete:  # a fresh database: nothing else queued
            end = tmp / "complete"
            end.mkdir()
            with database(kind, end) as url:
                key, _ = asyncio.run(prepare(settings_for(url, end)))
                env = environment(url, end, tiny_catalog(end / "catalog.toml", model, steps=2))
                with api_server(env, end) as base:
                    ok = asyncio.run(follow_to_the_end(base, key, args.complete, env, end))
            done = f"{kind}: {ok} of {args.complete} streams ended `completed` with outputs"
        return rows, done
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--streams", default="0,200,1000", help="open SSE streams per phase")
    parser.add_argument("--waits", type=int, default=100, help="OpenAI synchronous waits")
    parser.add_argument("--submits", type=int, default=40)
    parser.add_argument("--complete", type=int, default=100, help="orders run to the end")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args()
    model = None
    if args.complete:
        from tests.support.tiny_models import build_tiny_sdxl

        model = build_tiny_sdxl(Path(tempfile.gettempdir()) / "easel-bench-tiny-sdxl")
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    rows: list[Row] = []
    done: list[str] = []
    for kind in kinds:
        got, finished = run(kind, args, model)
        rows += got
        done.append(finished)
    idle = {r.db: r for r in rows if r.streams == 0 and r.waits == 0}
    print(
        "| database | streams + waits | submit p50 / p99 ms | p50 vs idle "
        "| /healthz p50 ms | feed reads/s | db commits/s, quiet |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        who = "nobody waiting" if not r.waits else f"{r.streams} + {r.waits}"
        ratio = r.submit_p50 / idle[r.db].submit_p50
        print(
            f"| {r.db} | {who} | {r.submit_p50:.1f} / {r.submit_p99:.1f} | {ratio:.2f}x "
            f"| {r.healthz_p50:.1f} | {r.feed_reads_per_s:.1f} "
            f"| {'-' if r.commits_per_s != r.commits_per_s else f'{r.commits_per_s:.1f}'} |"
        )
    for line in done:
        if line:
            print(line)
    if args.json:
        print(json.dumps([vars(r) for r in rows]))


if __name__ == "__main__":
    main()
