"""Wake-up latency: how long an idle worker takes to start an order after its submit commits.

    .venv/bin/python bench/wakeup.py [--orders N] [--only in-process|embedded] [--sides 256,512]

Embedded (real processes, SQLite, a 1-step tiny SDXL pipeline at each --sides size, 256x256 and
512x512 by default, on this machine's device): `easel serve` (the API wakes its worker child
through their socket) beside
`easel serve --no-worker` + `easel worker` (no link: the worker polls every EASEL_POLL_INTERVAL,
1 s), each order submitted over HTTP to an idle server after a random 0.2-1.2 s pause; the
orders' own timestamps give submit to completed and the wait for the worker (created to
started); the time outside the model is each order's submit to completed minus its generation
time as the worker timed it (the growth of easel_generation_duration_seconds_sum in /metrics,
read after the order: on a small machine the pipeline runs slower in the server than alone, and
that is not time outside it). "total - raw" subtracts instead the raw pipeline call's p50, timed
in this process on the same folder with the arguments the worker passes (the style's prompt and
negative prompt, its guidance, NumPy output). `easel serve` runs twice: orders as sent (the
output safety check on: a second model, ResNet-50 on CPU, run while the file is written) and with
`safety_check: false` (the model alone). The raw classifier's time is printed beside them.

In-process:
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
import re
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
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


def raw_pipeline(folder: Path, catalog: Path, n: int, side: int) -> list[float]:
    """Seconds per 1-step side x side call of the tiny pipeline, loaded and called as the worker
    loads and calls it for STYLE (prompt template, negative prompt, guidance, NumPy output)."""
    import torch
    from diffusers import StableDiffusionXLPipeline

    from easel.backends.loading import pick_device
    from easel.backends.speedups import apply_speedups
    from easel.catalog.loader import load_catalog

    model = load_catalog(catalog).style(STYLE)
    assert model is not None
    device = pick_device("auto")
    pipe = StableDiffusionXLPipeline.from_pretrained(str(folder)).to(device)
    pipe.set_progress_bar_config(disable=True)
    apply_speedups(pipe, Settings(), device)  # as the worker runs it
    times = []
    for i in range(n + 1):
        started = time.perf_counter()
        with torch.inference_mode():
            pipe(
                prompt=[model.render_prompt("bench")],
                negative_prompt=[model.negative_prompt],
                guidance_scale=model.guidance,
                num_inference_steps=1,
                width=side,
                height=side,
                output_type="np",
                generator=[torch.Generator("cpu").manual_seed(i)],
            )
        times.append(time.perf_counter() - started)
    return times[1:]  # the first call warms up


def raw_classifier(n: int, side: int) -> list[float]:
    """Seconds per NSFW score of one side x side image (the worker's default threads)."""
    import numpy as np
    from PIL import Image

    from easel.safety.classifier import nsfw_scores

    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    times = []
    for _ in range(n + 1):
        started = time.perf_counter()
        nsfw_scores([image], Settings().safety_threads)
        times.append(time.perf_counter() - started)
    return times[1:]


def embedded_topology(
    name: str,
    commands: list[list[str]],
    catalog: Path,
    tmp: Path,
    n: int,
    extra: dict[str, Any],
    side: int,
) -> dict[str, list[float]]:
    import subprocess
    from datetime import datetime

    from tests.support.app import free_port

    port = free_port()
    env = os.environ | {
        "EASEL_DATA_DIR": str(tmp / "data"),
        "EASEL_CATALOG": str(catalog),
        "EASEL_HOST": "127.0.0.1",
        "EASEL_PORT": str(port),
        "EASEL_LOG_LEVEL": "WARNING",
        "EASEL_POLL_INTERVAL": "1.0",
        "EASEL_METRICS": "true",  # the worker's own pipeline time per order (model_seconds)
        "EASEL_METRICS_DIR": str(tmp / "metrics"),  # shared by the API and a separate worker
        "EASEL_RATE_LIMITS": "false",  # the bench polls status often
    }
    (tmp / "metrics").mkdir()
    procs = []
    log = tmp / "serve.log"
    try:
        for i, command in enumerate(commands):
            with (tmp / f"p{i}.log").open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "easel", *command],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
            if i == 0:  # the API: migrated, admin key printed, before a worker starts
                log = tmp / "p0.log"
                deadline = time.monotonic() + 120
                while not re.search(r"key: (cfy-\w{32})", log.read_text()):
                    if time.monotonic() > deadline or procs[0].poll() is not None:
                        raise RuntimeError(f"{name}: no admin key:\n{log.read_text()}")
                    time.sleep(0.05)
        found = re.search(r"key: (cfy-\w{32})", log.read_text())
        assert found is not None
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": found.group(1)}, timeout=60
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: never ready")
            time.sleep(0.1)
        body = {"style": STYLE, "prompt": "bench", "width": side, "height": side, "steps": 1}
        body |= extra
        out: dict[str, list[float]] = {"total": [], "wait": [], "run": [], "model": []}
        model_before = model_seconds(client)
        for i in range(n + 1):
            time.sleep(0.2 + random.random())  # idle, at a random phase of the poll cycle
            order_id = client.post("/api/v1/generate", json=body).json()["order_id"]
            while (status := client.get(f"/api/v1/status/{order_id}").json())["status"] in (
                "pending",
                "running",
            ):
                # The timestamps are the server's: polling slower costs nothing, while each poll
                # takes CPU from the worker on a small machine.
                time.sleep(0.25)
            if status["status"] != "completed":
                raise RuntimeError(f"{name}: order {order_id} {status}")
            model_after = model_seconds(client)  # after the timed part: it costs the API CPU
            model, model_before = model_after - model_before, model_after
            if i == 0:
                continue  # warm-up: the first load of the pipeline
            created, started, completed = (
                datetime.fromisoformat(status[k]).timestamp()
                for k in ("created_at", "started_at", "completed_at")
            )
            out["total"].append(completed - created)
            out["wait"].append(started - created)
            out["run"].append(completed - started)
            out["model"].append(model)
        client.close()
        return out
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


GENERATION_SUM = re.compile(r'^easel_generation_duration_seconds_sum\{model="[^"]+"\} (\S+)$', re.M)


def model_seconds(client: httpx.Client) -> float:
    """The worker's generation time so far (easel_generation_duration_seconds, every model):
    the pipeline call as the worker timed it, from its claim of the device to the images."""
    text = client.get("/metrics").text
    return sum(float(v) for v in GENERATION_SUM.findall(text))


def embedded(n: int, side: int) -> None:
    from tests.support.catalogs import tiny_catalog
    from tests.support.tiny_models import build_tiny_sdxl

    tmp = Path(tempfile.mkdtemp(prefix="easel-wakeup-embedded-"))
    try:
        folder = build_tiny_sdxl(tmp / "tiny-sdxl")
        catalog = tiny_catalog(tmp / "catalog.toml", folder, steps=1)
        before = pct(raw_pipeline(folder, catalog, n, side), 0.50)
        check = pct(raw_classifier(n, side), 0.50)
        off = {"safety_check": False}
        topologies: dict[str, tuple[list[list[str]], dict[str, Any]]] = {
            "easel serve (socket wake-up)": ([["serve"]], {}),
            "easel serve, safety_check false": ([["serve"]], off),
            "serve --no-worker + worker (1 s poll)": ([["serve", "--no-worker"], ["worker"]], {}),
        }
        rows = {}
        for i, (name, (commands, extra)) in enumerate(topologies.items()):
            (tmp / str(i)).mkdir()
            rows[name] = embedded_topology(name, commands, catalog, tmp / str(i), n, extra, side)
        # Timed before and after the servers: the lower p50, as the machine may be shared.
        raw = min(before, pct(raw_pipeline(folder, catalog, n, side), 0.50))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"embedded, SQLite, 1-step tiny SDXL at {side}x{side}; N={n} orders per topology (ms, p50)"
    )
    head = f"{'topology':<40}{'submit->done':>13}{'wait worker':>12}{'outside model':>14}"
    print(head + f"{'model':>8}{'total - raw':>12}")
    for name, r in rows.items():
        total, wait = pct(r["total"], 0.5), pct(r["wait"], 0.5)
        outside = pct([t - m for t, m in zip(r["total"], r["model"], strict=True)], 0.5)
        model = pct(r["model"], 0.5)
        cells = f"{total:>13.1f}{wait:>12.1f}{outside:>14.1f}{model:>8.1f}{total - raw:>12.1f}"
        print(f"{name:<40}{cells}")
    print(f"{'raw pipeline call (this process)':<40}{'':>13}{'':>12}{'':>14}{raw:>8.1f}")
    print(f"raw safety classifier, one {side}x{side} image (this process): {check:.1f} ms\n")
    woken, polled = (pct(rows[name]["wait"], 0.5) for name in list(rows)[::2])
    if woken > 0:
        print(f"ratio = poll wait p50 / socket wake-up wait p50 = {polled / woken:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=30)
    parser.add_argument("--only", choices=("in-process", "embedded"), default=None)
    parser.add_argument("--sides", default="256,512", help="embedded: image sides to run")
    args = parser.parse_args()
    n = args.orders
    print(f"machine: {os.cpu_count()} CPUs, {sys.platform}; N={n} orders per mode")
    if args.only != "in-process":
        for side in (int(x) for x in args.sides.split(",")):
            embedded(n, side)
    if args.only == "embedded":
        return
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
