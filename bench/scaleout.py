"""Scale-out load: API and worker processes on one PostgreSQL and one S3-compatible server.

    .venv/bin/python bench/scaleout.py [--orders N] [--apis A] [--workers W]

Runs the same load twice in one go: 1 API + 1 worker (the baseline), then A APIs + W workers,
each on a fresh PostgreSQL database and a moto S3 server on loopback, with a tiny random-weight
SDXL pipeline (256x256, 2 steps) so the figures measure Easel's queueing, not a GPU. Prints
orders/s, queue wait (claim time - submit time) p50/p99, and checks that every order completed
exactly once and was charged once.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from tests.support import databases
from tests.support.audit import audit_account
from tests.support.catalogs import tiny_catalog
from tests.support.processes import cluster, make_account, run_db, wait_order
from tests.support.s3 import s3_server
from tests.support.tiny_models import build_tiny_sdxl

from easel.config import Settings

BODY = {"style": "general", "prompt": "a kite over dunes", "width": 256, "height": 256}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(tmp: Path, model: Path, orders: int, apis: int, workers: int) -> dict[str, float]:
    template = databases.PostgresTemplate()
    template.create()
    url = template.copy()
    work = Path(tempfile.mkdtemp(dir=tmp))
    settings = Settings(
        data_dir=work / "data",
        database_url=url,
        secret_key="bench",
        catalog=tiny_catalog(work / "catalog.toml", model),
    )
    try:
        account_id, key = make_account(settings, topup=orders)
        with (
            s3_server() as s3,
            cluster(
                settings,
                work,
                EASEL_STORAGE="s3",
                EASEL_S3_BUCKET=s3.bucket,
                EASEL_S3_ENDPOINT_URL=s3.endpoint,
                EASEL_POLL_INTERVAL="30",
                EASEL_LOG_LEVEL="WARNING",
            ) as c,
        ):
            bases = [c.api(f"api{i}") for i in range(apis)]
            for i in range(workers):
                c.worker(f"w{i}")
            clients = [httpx.Client(base_url=b, headers={"X-API-Key": key}) for b in bases]
            warm = clients[0].post("/api/v1/generate", json=BODY).json()["order_id"]
            for _ in range(workers):  # let every worker load the model once
                wait_order(clients[0], warm, ("completed",))
            time.sleep(2)
            start = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                ids = list(
                    pool.map(
                        lambda cl: cl.post("/api/v1/generate", json=BODY).json()["order_id"],
                        itertools.islice(itertools.cycle(clients), orders),
                    )
                )
            done = [
                wait_order(clients[i % apis], oid, ("completed", "failed"), timeout=900)
                for i, oid in enumerate(ids)
            ]
            elapsed = time.monotonic() - start
            for cl in clients:
                cl.close()
        waits = [
            (
                datetime.fromisoformat(d["started_at"]) - datetime.fromisoformat(d["created_at"])
            ).total_seconds()
            * 1000
            for d in done
        ]
        audit = run_db(settings, lambda s: audit_account(s, account_id, 2000 + orders))
        assert all(d["status"] == "completed" for d in done), "an order did not complete"
        assert audit.problems == [], audit.problems
        return {
            "orders_s": orders / elapsed,
            "wait_p50": statistics.median(waits),
            "wait_p99": percentile(waits, 0.99),
        }
    finally:
        template.drop(url)
        template.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=60)
    parser.add_argument("--apis", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="easel-scaleout-") as tmp:
        model = build_tiny_sdxl(Path(tmp) / "tiny-sdxl")
        base = run(Path(tmp), model, args.orders, 1, 1)
        scaled = run(Path(tmp), model, args.orders, args.apis, args.workers)
    print(
        f"machine: {os.cpu_count()} CPUs; {args.orders} orders; PostgreSQL + moto S3; "
        "tiny SDXL 256x256, 2 steps"
    )
    print(f"{'topology':<24}{'orders/s':>10}{'wait p50 ms':>13}{'wait p99 ms':>13}")
    for name, r in (
        ("1 API + 1 worker", base),
        (f"{args.apis} APIs + {args.workers} workers", scaled),
    ):
        print(f"{name:<24}{r['orders_s']:>10.2f}{r['wait_p50']:>13.0f}{r['wait_p99']:>13.0f}")
    print(
        f"ratio (scaled / baseline orders/s) = {scaled['orders_s'] / base['orders_s']:.2f}; "
        "every order completed once and was charged once"
    )


if __name__ == "__main__":
    main()
