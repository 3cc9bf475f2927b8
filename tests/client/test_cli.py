"""The user commands of `easel`, run as processes against a real server on loopback: what they
show on a real terminal, their JSON lines, and `easel resume` after the client was killed or
lost an answer."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.cells import cell_len

from easel.webhooks.signing import headers as signed_headers
from easel.webhooks.signing import new_secret
from tests.support.live import Live
from tests.support.proxy import loopback_proxy
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow

EASEL = [sys.executable, "-m", "easel"]
SMALL = ["--width", "256", "--height", "256"]
COLUMNS = 100


def user_env(live: Live, key: str, state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return env | {
        "EASEL_BASE_URL": live.base_url,
        "EASEL_API_KEY": key,
        "EASEL_STATE_DIR": str(state),
        "TERM": "xterm-256color",
    }


def easel(*args: str, env: dict[str, str], stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EASEL, *args], env=env, input=stdin.decode(), capture_output=True, text=True, timeout=120
    )


def journal(state: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((state / "journal").glob("*.json"))]


def test_generate_on_a_terminal(live: Live, tmp_path: Path) -> None:
    _, key = live.account()
    env = user_env(live, key, tmp_path / "state")
    out = tmp_path / "out"
    args = ["generate", "a red fox", "--style", "anime", "--n", "3", "--seed", "7", "-o", str(out)]
    with live.worker_stopped():
        shell = Terminal([*EASEL, *args, *SMALL], env, columns=COLUMNS)
        shell.wait_for("queued, position 3")  # three orders wait, the last one third
    assert shell.wait() == 0, shell.text
    lines = shell.lines()
    assert [line for line in lines if cell_len(line) > COLUMNS] == []
    assert sum(line.startswith("submitted ORD-") for line in lines) == 3, lines
    assert any(re.search(r"step\s+━+.*\d/4", line) for line in lines), lines  # the step bar
    saved = [re.match(r"\s+saved seed (\d+)  256x256", line) for line in lines]
    assert sorted(m[1] for m in saved if m) == ["7", "8", "9"], lines  # one line per image
    assert sum(" completed: 1 file(s), cost 1" in line for line in lines) == 3
    names = sorted(f.name.split("_", 1)[1] for f in out.iterdir())
    assert names == ["0_seed7.png", "0_seed8.png", "0_seed9.png"]
    assert journal(tmp_path / "state") == []  # all done, nothing left to resume


def test_json_lines_no_wait_and_the_orders_commands(live: Live, tmp_path: Path) -> None:
    _, key = live.account()
    env = user_env(live, key, tmp_path / "state")
    with live.worker_stopped():
        placed = easel("generate", "a lighthouse", "--no-wait", *SMALL, env=env)
        assert placed.returncode == 0, placed.stderr
        order_id = placed.stdout.strip()
        assert re.fullmatch(r"ORD-\d{8}-\w+", order_id), placed.stdout
        pending = json.loads(easel("orders", "show", order_id, "--json", env=env).stdout)
        assert pending["status"] == "pending" and pending["queue_position"] == 1
        doomed = easel("generate", "a storm", "--no-wait", *SMALL, env=env).stdout.strip()
        canceled = easel("orders", "cancel", doomed, env=env)
        assert canceled.stdout.strip() == f"{doomed} canceled; refunded 1"
    watched = easel("orders", "watch", order_id, "--json", env=env)
    assert watched.returncode == 0, watched.stderr
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert events[-1]["event"] == "completed" and events[-1]["order_id"] == order_id
    assert {"started", "progress"} <= {e["event"] for e in events}
    fetched = easel("orders", "download", order_id, "-o", str(tmp_path / "d"), "--json", env=env)
    [file] = [json.loads(line) for line in fetched.stdout.splitlines()]
    assert file["event"] == "file" and Path(file["path"]).is_file() and file["width"] == 256
    listed = [
        json.loads(line) for line in easel("orders", "ls", "--json", env=env).stdout.splitlines()
    ]
    assert [o["order_id"] for o in listed] == [doomed, order_id]
    assert [o["status"] for o in listed] == ["canceled", "completed"]
    table = easel("orders", "ls", "--status", "completed", env=env).stdout
    assert order_id in table and doomed not in table
    account = json.loads(easel("account", "--json", env=env).stdout)
    assert account["credits"]["total"] == 300 - 1  # the canceled one was refunded
    assert "credits     299" in easel("account", env=env).stdout
    watch_failed = easel("orders", "watch", doomed, env=env)
    assert watch_failed.returncode == 1 and "canceled by the client" in watch_failed.stdout
    refused = easel("account", env=env | {"EASEL_API_KEY": "cfy-bad"})
    assert refused.returncode == 3 and "401 unauthorized" in refused.stderr
    # --no-wait entries stay in the journal, resumed only when named
    assert [e["state"] for e in journal(tmp_path / "state")] == ["detached", "detached"]


def test_resume_after_the_client_was_killed_mid_wait(live: Live, tmp_path: Path) -> None:
    account_id, key = live.account()
    state, out = tmp_path / "state", tmp_path / "out"
    env = user_env(live, key, state)
    args = [*EASEL, "generate", "a red fox", "--seed", "11", "-o", str(out), *SMALL]
    with live.worker_stopped():
        client = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not [e for e in journal(state) if e["state"] == "submitted"]:
            assert time.monotonic() < deadline and client.poll() is None, client.stderr
            time.sleep(0.05)
        client.send_signal(signal.SIGKILL)
        assert client.wait(10) == -signal.SIGKILL
        client.stderr.close()  # type: ignore[union-attr]
    [entry] = journal(state)
    resumed = easel("resume", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{entry['order_id']} completed" in resumed.stdout
    assert [f.name for f in out.iterdir()] == [f"{entry['order_id']}_0_seed11.png"]
    assert live.orders_and_debits(account_id) == (1, 1)
    assert journal(state) == []
    again = easel("resume", env=env)
    assert again.returncode == 0 and "nothing to resume" in again.stderr


def test_resume_after_the_answer_was_lost(live: Live, tmp_path: Path) -> None:
    """The request reached the server, the answer did not reach the client (retries off):
    `easel resume` sends the same key again and gets the same order."""
    account_id, key = live.account()
    state, out = tmp_path / "state", tmp_path / "out"
    with loopback_proxy(live.base_url) as proxy:
        env = user_env(live, key, state) | {"EASEL_BASE_URL": proxy.url}
        proxy.drop_responses("POST", "/api/v1/generate")
        lost = easel(
            "generate", "a kite", "-o", str(out), *SMALL, env=env | {"EASEL_MAX_RETRIES": "0"}
        )
        assert lost.returncode == 3 and "easel resume" in lost.stderr, lost.stderr
        [entry] = journal(state)
        assert entry["state"] == "sending" and entry["order_id"] is None
        assert live.orders_and_debits(account_id) == (1, 1)  # made, answer lost
        resumed = easel("resume", "--json", env=env)
    assert resumed.returncode == 0, resumed.stderr
    lines = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert lines[0]["event"] == "submitted" and lines[0]["replayed"] is True
    assert lines[0]["idempotency_key"] == entry["key"]
    assert lines[-1]["event"] == "file" and Path(lines[-1]["path"]).parent == out
    assert live.orders_and_debits(account_id) == (1, 1)


def test_webhooks_verify(live: Live, tmp_path: Path) -> None:
    secret = new_secret()
    body = b'{"order_id": "ORD-20261121-7K3QX9P2MA", "status": "completed", "output_urls": []}'
    signed = signed_headers(secret, "msg_1", int(time.time()), body)
    env = user_env(live, "", tmp_path)
    flags = [f"--header={name}: {value}" for name, value in signed.items()]
    good = easel("webhooks", "verify", "--secret", secret, *flags, env=env, stdin=body)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["order_id"] == "ORD-20261121-7K3QX9P2MA"
    forged = easel("webhooks", "verify", "--secret", secret, *flags, env=env, stdin=body + b" ")
    assert forged.returncode == 1 and "no webhook-signature matches" in forged.stderr
    other = easel(
        "webhooks", "verify", *flags, env=env | {"EASEL_WEBHOOK_SECRET": new_secret()}, stdin=body
    )
    assert other.returncode == 1
