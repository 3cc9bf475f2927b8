"""Two API processes and three workers on one PostgreSQL and one S3-compatible store."""

from __future__ import annotations

import itertools
from pathlib import Path

import httpx
import pytest

from easel.config import Settings
from tests.support.audit import audit_account
from tests.support.catalogs import tiny_catalog
from tests.support.processes import cluster, make_account, run_db, wait_order
from tests.support.s3 import s3_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SMALL = {"style": "general", "prompt": "a kite over dunes", "width": 256, "height": 256}


def test_two_apis_three_workers_postgres_and_s3(
    postgres_url: str, tmp_path: Path, tiny_sdxl: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=postgres_url,
        secret_key="scale-secret",
        catalog=tiny_catalog(tmp_path / "catalog.toml", tiny_sdxl),
    )
    account_id, key = make_account(settings)
    with (
        s3_server() as s3,
        cluster(
            settings,
            tmp_path,
            EASEL_STORAGE="s3",
            EASEL_S3_BUCKET=s3.bucket,
            EASEL_S3_ENDPOINT_URL=s3.endpoint,
            EASEL_POLL_INTERVAL="30",
        ) as c,
    ):
        apis = [c.api("api1"), c.api("api2")]
        for i in range(3):
            c.worker(f"w{i}")
        clients = [httpx.Client(base_url=b, headers={"X-API-Key": key}, timeout=30) for b in apis]
        ids = [
            client.post("/api/v1/generate", json=SMALL).json()["order_id"]
            for client, _ in zip(itertools.cycle(clients), range(30), strict=False)
        ]
        # Any API process reads any order.
        done = [
            wait_order(clients[(i + 1) % 2], oid, ("completed", "failed"))
            for i, oid in enumerate(ids)
        ]
        for client in clients:
            client.close()
        assert len(s3.keys()) == 30
    assert [d["status"] for d in done] == ["completed"] * 30
    audit = run_db(settings, lambda s: audit_account(s, account_id, 2000))
    assert audit.problems == []
    assert audit.balance == 2000 - 30
