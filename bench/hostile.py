"""Junk is refused fast and does not slow anyone else: a 50,000-key JSON body against a normal
submit, and /healthz while junk keeps arriving against /healthz on an idle server.

    .venv/bin/python bench/hostile.py [--db sqlite|postgresql] [--requests N] [--junk-clients C]

A real `easel serve --no-worker` subprocess. Goal (issue 10): junk refused in under 100 ms, and
/healthz p50 with junk arriving within 2x of idle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from submit import BODY, database, prepare, server, settings_for

JUNK = json.dumps(BODY | {f"k{i}": i for i in range(50_000)}).encode()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def timed(client: httpx.AsyncClient, method: str, path: str, **kw: object) -> float:
    t0 = time.perf_counter()
    r = await client.request(method, path, timeout=120, **kw)  # type: ignore[arg-type]
    took = time.perf_counter() - t0
    assert r.status_code < 500, r.text
    return took


async def measure(base: str, key: str, n: int, junk_clients: int) -> dict[str, list[float]]:
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    out: dict[str, list[float]] = {}
    async with httpx.AsyncClient(base_url=base, headers=headers) as client:
        for _ in range(3):  # warm-up
            await timed(client, "POST", "/api/v1/generate", content=json.dumps(BODY))
        out["submit"] = [
            await timed(client, "POST", "/api/v1/generate", content=json.dumps(BODY))
            for _ in range(n)
        ]
        out["junk"] = [
            await timed(client, "POST", "/api/v1/generate", content=JUNK) for _ in range(n)
        ]
        out["healthz idle"] = [await timed(client, "GET", "/healthz") for _ in range(n)]
        stop = asyncio.Event()

        async def junk_forever() -> None:
            async with httpx.AsyncClient(base_url=base, headers=headers) as own:
                while not stop.is_set():
                    await timed(own, "POST", "/api/v1/generate", content=JUNK)

        senders = [asyncio.create_task(junk_forever()) for _ in range(junk_clients)]
        await asyncio.sleep(0.5)
        out["healthz under junk"] = [await timed(client, "GET", "/healthz") for _ in range(n)]
        stop.set()
        await asyncio.gather(*senders)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--junk-clients", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        with database(args.db, tmp) as url:
            settings = settings_for(url, tmp)
            key, _ = asyncio.run(prepare(settings))
            with server(url, tmp) as base:
                got = asyncio.run(measure(base, key, args.requests, args.junk_clients))
    print(f"database: {args.db}; {args.requests} requests each; junk body {len(JUNK):,} bytes")
    print(f"{'what':<22}{'p50 ms':>9}{'p99 ms':>9}")
    for name, values in got.items():
        print(f"{name:<22}{pct(values, 0.5):>9.1f}{pct(values, 0.99):>9.1f}")
    junk, submit = statistics.median(got["junk"]), statistics.median(got["submit"])
    idle, loaded = (
        statistics.median(got["healthz idle"]),
        statistics.median(got["healthz under junk"]),
    )
    print(f"ratio junk refusal / valid submit (p50) = {junk / submit:.2f}")
    print(f"ratio /healthz under junk / idle (p50) = {loaded / idle:.2f}")
    print(f"junk refused under 100 ms (p99): {'yes' if pct(got['junk'], 0.99) < 100 else 'no'}")


if __name__ == "__main__":
    main()
