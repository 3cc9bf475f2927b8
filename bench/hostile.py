"""Junk is refused fast and costs the server no more than real work: a 50,000-key JSON body
(828 KB) against a normal submit, and /healthz while clients send junk back to back against
/healthz while the same number of clients submit real orders back to back.

    .venv/bin/python bench/hostile.py [--db sqlite|postgresql] [--requests N] [--clients C]

A real `easel serve --no-worker` subprocess. Goal (issue 10): junk refused in under 100 ms (p99),
and /healthz no slower under junk than under the same number of clients doing real work.
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


async def measure(base: str, key: str, n: int, clients: int) -> dict[str, list[float]]:
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
        for name, body in (("real submits", json.dumps(BODY).encode()), ("junk", JUNK)):
            stop = asyncio.Event()

            async def forever(content: bytes = body, stop: asyncio.Event = stop) -> None:
                async with httpx.AsyncClient(base_url=base, headers=headers) as own:
                    while not stop.is_set():
                        await timed(own, "POST", "/api/v1/generate", content=content)

            senders = [asyncio.create_task(forever()) for _ in range(clients)]
            await asyncio.sleep(0.5)
            out[f"healthz under {name}"] = [
                await timed(client, "GET", "/healthz") for _ in range(n)
            ]
            stop.set()
            await asyncio.gather(*senders)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        with database(args.db, tmp) as url:
            settings = settings_for(url, tmp)
            key, _ = asyncio.run(prepare(settings))
            with server(url, tmp) as base:
                got = asyncio.run(measure(base, key, args.requests, args.clients))
    print(f"database: {args.db}; {args.requests} requests each; junk body {len(JUNK):,} bytes")
    print(f"{'what':<28}{'p50 ms':>9}{'p99 ms':>9}")
    for name, values in got.items():
        print(f"{name:<28}{pct(values, 0.5):>9.1f}{pct(values, 0.99):>9.1f}")
    junk, submit = statistics.median(got["junk"]), statistics.median(got["submit"])
    real = statistics.median(got["healthz under real submits"])
    loaded = statistics.median(got["healthz under junk"])
    print(f"ratio junk refusal / valid submit (p50) = {junk / submit:.2f}")
    print(f"ratio /healthz under junk / under real submits (p50) = {loaded / real:.2f}")
    print(f"junk refused under 100 ms (p99): {'yes' if pct(got['junk'], 0.99) < 100 else 'no'}")


if __name__ == "__main__":
    main()
