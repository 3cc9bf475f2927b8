"""Metrics of several processes in one scrape: processes sharing EASEL_METRICS_DIR, `easel serve`
and its children, two uvicorn workers, and a worker that serves its own port (another host)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from easel.config import Settings
from tests.support import remote_backend
from tests.support.app import auth, free_port
from tests.support.catalogs import tiny_catalog
from tests.support.metrics import Scrape, scrape_sync
from tests.support.processes import cluster, make_account
from tests.support.receiver import webhook_receiver

ROOT = Path(__file__).resolve().parents[2]

# A process of the shared directory: counts, holds a live gauge, then exits (or scrapes, or
# marks a process dead and scrapes).
PROCESS = """
import os, sys
from easel import metrics
assert metrics.is_shared()
mode, arg = sys.argv[1], sys.argv[2]
if mode == "count":
    metrics.ORDERS_FINISHED.labels("failed", "m-1", "generation_failed").inc(int(arg))
    metrics.HTTP_IN_PROGRESS.inc()
    print(os.getpid())
else:
    if mode == "ended":
        metrics.process_ended(int(arg))
    sys.stdout.buffer.write(metrics.exposition())
"""


def shared(directory: Path, *args: str) -> str:
    env = os.environ | {"EASEL_METRICS_DIR": str(directory), "PYTHONPATH": str(ROOT / "src")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", PROCESS, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_processes_sharing_a_directory_add_up_in_one_scrape(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    first = int(shared(directory, "count", "3"))
    second = int(shared(directory, "count", "4"))
    assert first != second
    both = Scrape(shared(directory, "scrape", "-"))
    failed = {"status": "failed", "model": "m-1", "code": "generation_failed"}
    assert both.value("easel_orders_finished_total", **failed) == 7
    assert both.value("easel_http_requests_in_progress") == 2  # neither was marked dead yet
    # The first process ended: its live gauge goes, its counts stay (totals never go down).
    after = Scrape(shared(directory, "ended", str(first)))
    assert after.value("easel_http_requests_in_progress") == 1
    assert after.value("easel_orders_finished_total", **failed) == 7


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what} after {timeout} s")
        time.sleep(0.1)


def pids_in(directory: Path) -> set[str]:
    return {f.stem.rsplit("_", 1)[-1] for f in directory.glob("*.db")}


@pytest.mark.slow
def test_serve_clears_its_directory_and_adds_up_its_children(
    settings: Settings, tmp_path: Path
) -> None:
    """`easel serve --no-worker` and its `easel services` child: the child's webhook attempt shows
    in the API's /metrics; what an earlier run left in the directory does not."""
    directory = settings.data_dir / "metrics"
    directory.mkdir(parents=True)
    shared(directory, "count", "1000")  # a process of an earlier run
    assert pids_in(directory)
    _, key = make_account(settings, "standard")
    with cluster(settings, tmp_path) as c, webhook_receiver() as hooks:
        base = c.api()
        body = {"style": "general", "prompt": "a fox", "webhook_url": hooks.url}
        r = httpx.post(base + "/api/v1/generate", json=body, headers=auth(key))
        assert r.status_code == 200, r.text
        order_id = r.json()["order_id"]
        r = httpx.post(base + f"/api/v1/orders/{order_id}/cancel", headers=auth(key))
        assert r.status_code == 200, r.text
        hooks.wait_for(1)

        def delivered() -> bool:
            scraped = scrape_sync(base + "/metrics")
            return scraped.value("easel_webhook_attempts_total", result="delivered") == 1

        wait_for(delivered, "delivered (counted by the services child)")
        scraped = scrape_sync(base + "/metrics")
        assert len(pids_in(directory)) >= 2  # the API and its child
    assert scraped.value("easel_orders_finished_total", status="canceled") == 1  # the API's
    assert scraped.value("easel_orders_finished_total", model="m-1") == 0  # cleared at start
    assert scraped.value("easel_http_requests_total", route="/api/v1/generate") == 1


@pytest.mark.slow
def test_uvicorn_workers_sharing_the_directory_answer_with_the_same_totals(
    settings: Settings, tmp_path: Path
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    port = free_port()
    env = os.environ | {
        "PYTHONPATH": str(ROOT / "src"),
        "EASEL_DATA_DIR": str(settings.data_dir),
        "EASEL_DATABASE_URL": settings.db_url,
        "EASEL_SECRET_KEY": settings.secret_key,
        "EASEL_METRICS_DIR": str(directory),
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "easel.api.app:create_app"]
    args = ["--workers", "2", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    base = f"http://127.0.0.1:{port}"
    with running(command + args, env, tmp_path / "uvicorn.log"):
        wait_for(lambda: up(base + "/healthz") and len(pids_in(directory)) >= 2, "up")
        for _ in range(40):  # a new connection each: either worker may take it
            assert httpx.get(base + "/healthz").status_code == 200
        totals = [
            scrape_sync(base + "/metrics").value(
                "easel_http_requests_total", route="/healthz", status="200"
            )
            for _ in range(6)
        ]
    assert min(totals) >= 40
    assert max(totals) - min(totals) <= 1  # the same sum whichever worker answered


WORKER = f"""
import sys
sys.modules["torch"] = None  # a remote family only: no torch
from easel.backends import registry
registry.FAMILIES[{remote_backend.FAMILY!r}] = {remote_backend.PATH!r}
from easel.cli import main
main(["worker", "--models", "remote-x", "--metrics-port", sys.argv[1]])
"""


@pytest.mark.slow
def test_a_worker_alone_serves_its_own_metrics_with_the_token(
    settings: Settings, tmp_path: Path
) -> None:
    catalog = tiny_catalog(
        tmp_path / "catalog.toml", tmp_path, extra=remote_backend.catalog_table("http://x")
    )
    port = free_port()
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "EASEL_DATA_DIR": str(settings.data_dir),
        "EASEL_DATABASE_URL": settings.db_url,
        "EASEL_CATALOG": str(catalog),
        "EASEL_SECRET_KEY": settings.secret_key,
        "EASEL_HOST": "127.0.0.1",
        "EASEL_METRICS_TOKEN": "worker-token",
        "EASEL_POLL_INTERVAL": "0.1",
    }
    env.pop("EASEL_METRICS_DIR", None)
    url = f"http://127.0.0.1:{port}/metrics"
    token = {"authorization": "Bearer worker-token"}
    with running([sys.executable, "-c", WORKER, str(port)], env, tmp_path / "worker.log") as proc:

        def beating() -> bool:
            if not up(url, token):
                return False
            return scrape_sync(url, **token).value("easel_worker_heartbeats_total") >= 1

        wait_for(beating, "heartbeating")
        assert httpx.get(url).status_code == 401
        scraped = scrape_sync(url, **token)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert scraped.value("easel_claim_duration_seconds_count", outcome="empty") >= 1
    assert scraped.value("easel_queue_depth") == 0  # database figures come from the API's


def up(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def running(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    except BaseException:
        print(log.read_text(errors="replace")[-4000:])
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
