"""An operator's model lifecycle against a Hugging Face hub on loopback (HF_ENDPOINT): `easel
models pull` with progress at a real terminal width, `verify` (and a corrupted file failing it),
a worker running the pulled model offline, a first load downloading with `loading_model` and
growing bytes in the order's events, and EASEL_UNSERVED (refuse: 503, nothing charged; queue:
the status says what it waits for, and it runs once a worker for it starts)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.app import free_port
from tests.support.catalogs import tiny_catalog
from tests.support.databases import sqlite_url
from tests.support.hf_hub import hf_hub

pytestmark = pytest.mark.slow

REPO = "easel-test/tiny-sdxl"
COLUMNS = 96
BODY = {"style": "general", "prompt": "a lighthouse", "width": 256, "height": 256}


def in_terminal(args: list[str], env: dict[str, str], columns: int = COLUMNS) -> tuple[int, str]:
    """Run `easel ARGS` on a pseudo-terminal `columns` wide; its exit code and what it drew."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "easel", *args], env=env | {"COLUMNS": ""},
                            stdin=child, stdout=child, stderr=child)  # fmt: skip
    os.close(child)
    out = b""
    while True:
        ready, _, _ = select.select([main], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal closed: the process is done
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(main)
    return proc.wait(timeout=60), out.decode(errors="replace")


def base_env(tmp: Path, hub_url: str) -> dict[str, str]:
    return os.environ | {
        "HF_ENDPOINT": hub_url,
        "HF_HOME": str(tmp / "hf"),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "EASEL_CATALOG": str(tiny_catalog(tmp / "catalog.toml", REPO, steps=2)),
        "EASEL_DATA_DIR": str(tmp / "data"),
        "EASEL_DATABASE_URL": sqlite_url(tmp),
        "EASEL_HOST": "127.0.0.1",
        "EASEL_SECRET_KEY": "e2e-secret",
        "EASEL_LOG_LEVEL": "WARNING",
        "EASEL_PROGRESS_INTERVAL": "0",
        "EASEL_EVENTS_POLL_INTERVAL": "0.05",
        "EASEL_WORKER_HEARTBEAT_SECONDS": "1",
    }


@contextmanager
def processes(env: dict[str, str], *commands: list[str]) -> Iterator[tuple[str, str]]:
    """`easel COMMAND` each; the base URL and the admin key the first one (serve) printed."""
    env = env | {"EASEL_PORT": str(free_port())}
    log = Path(env["EASEL_DATA_DIR"]).parent / f"serve-{env['EASEL_PORT']}.log"
    procs = []
    try:
        with log.open("wb") as out:
            for command in commands:
                procs.append(subprocess.Popen([sys.executable, "-m", "easel", *command], env=env,
                                              stdout=out, stderr=subprocess.STDOUT))  # fmt: skip
        base = f"http://127.0.0.1:{env['EASEL_PORT']}"
        if commands[0][0] != "serve":
            yield base, ""
            return
        deadline = time.monotonic() + 60
        while not (key := re.search(r"key: (cfy-\w{32})", log.read_text())):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        while True:
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield base, key.group(1)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def finished(client: httpx.Client, order_id: str, timeout: float = 120) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while (body := client.get(f"/api/v1/status/{order_id}").json())["status"] in (
        "pending",
        "running",
    ):
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    return body  # type: ignore[no-any-return]


def test_pull_verify_and_run_offline(tmp_path: Path, tiny_sdxl: Path) -> None:
    with hf_hub(tiny_sdxl, REPO) as hub:
        env = base_env(tmp_path, hub.url)
        code, drawn = in_terminal(["models", "pull", "general"], env)
        assert code == 0, drawn
        assert "unet/diffusion_pytorch_model.safetensors" in drawn
        assert f"{REPO} (all)" in drawn and "100%" in drawn, drawn
        plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", drawn)
        bars = [line for line in re.split(r"[\r\n]", plain) if "%|" in line]
        assert bars and max(len(line) for line in bars) <= COLUMNS, drawn  # the terminal's width
        assert any(len(line) >= COLUMNS - 8 for line in bars)  # and using it
        assert "ready at" in drawn
        assert any(r.startswith("GET /api/models/") for r in hub.requests)

        verified = subprocess.run([sys.executable, "-m", "easel", "models", "verify", "general"],
                                  env=env, capture_output=True, text=True)  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert f"{REPO} OK" in verified.stdout
        listed = subprocess.run([sys.executable, "-m", "easel", "models", "ls"], env=env,
                                capture_output=True, text=True)  # fmt: skip
        assert re.search(r"sdxl-general\s+sdxl\s+yes", listed.stdout), listed.stdout

    # The hub is gone: the worker runs the pulled model from the cache alone.
    offline = env | {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    with processes(offline, ["serve"]) as (base, key):
        client = httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30)
        order_id = client.post("/api/v1/generate", json=BODY).json()["order_id"]
        assert finished(client, order_id)["status"] == "completed"
        client.close()

    # A corrupted weight file (same size, other bytes) fails verify.
    with hf_hub(tiny_sdxl, REPO) as hub:
        env = env | {"HF_ENDPOINT": hub.url}
        snapshot = next((tmp_path / "hf" / "hub").glob("models--*/snapshots/*"))
        unet = (snapshot / "unet" / "diffusion_pytorch_model.safetensors").resolve()
        data = bytearray(unet.read_bytes())
        data[-1] ^= 0xFF
        unet.write_bytes(bytes(data))
        verified = subprocess.run([sys.executable, "-m", "easel", "models", "verify", "general"],
                                  env=env, capture_output=True, text=True)  # fmt: skip
        assert verified.returncode == 1
        assert "unet/diffusion_pytorch_model.safetensors: sha256 differs" in verified.stdout


def test_first_load_downloads_with_progress_in_events(tmp_path: Path, tiny_sdxl: Path) -> None:
    with hf_hub(tiny_sdxl, REPO, delay=0.3) as hub:
        env = base_env(tmp_path, hub.url)
        with processes(env, ["serve"]) as (base, key):
            client = httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60)
            deadline = time.monotonic() + 60
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            order_id = client.post("/api/v1/generate", json=BODY).json()["order_id"]
            events = []
            with client.stream("GET", f"/api/v1/orders/{order_id}/events") as stream:
                name = ""
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        events.append((name, json.loads(line[6:])))
                        if name in ("completed", "failed", "canceled", "timeout"):
                            break
            client.close()
    names = [n for n, _ in events]
    assert names[-1] == "completed", events
    loading = [d for n, d in events if n == "loading_model"]
    done = [d["bytes_done"] for d in loading if d["bytes_done"] is not None]
    assert len(set(done)) >= 3, loading  # bytes grow while it downloads
    assert done == sorted(done)
    assert loading[-1]["bytes_total"] == done[-1] and loading[0]["model"] == "sdxl-general"
    assert names.index("loading_model") < names.index("progress")


def test_unserved_refuse_and_queue(tmp_path: Path, tiny_sdxl: Path) -> None:
    env = base_env(tmp_path, "http://127.0.0.1:9")
    env |= {
        "HF_HUB_OFFLINE": "1",
        "EASEL_CATALOG": str(tiny_catalog(tmp_path / "local.toml", tiny_sdxl)),
    }
    with processes(env | {"EASEL_UNSERVED": "refuse"}, ["serve", "--no-worker"]) as (base, key):
        client = httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30)
        before = client.get("/api/v1/account").json()
        refused = client.post("/api/v1/generate", json=BODY)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "30"
        assert refused.json()["error"]["code"] == "no_worker"
        assert "sdxl-general" in refused.json()["error"]["message"]
        assert client.get("/api/v1/account").json() == before  # nothing charged
        assert client.get("/api/v1/orders").json()["orders"] == []
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["workers"] == 0
        client.close()
    (tmp_path / "queue").mkdir()  # a fresh server, so that it prints its admin key again
    env |= {
        "EASEL_DATA_DIR": str(tmp_path / "queue"),
        "EASEL_DATABASE_URL": sqlite_url(tmp_path / "queue"),
    }
    with processes(env, ["serve", "--no-worker"]) as (base, key):
        client = httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30)
        order_id = client.post("/api/v1/generate", json=BODY).json()["order_id"]
        status = client.get(f"/api/v1/status/{order_id}").json()
        assert status["status"] == "pending"
        assert status["waiting_for"] == "waiting for a worker that serves sdxl-general"
        with processes(env, ["worker"]):
            body = finished(client, order_id)
        assert body["status"] == "completed" and "waiting_for" not in body
        client.close()
