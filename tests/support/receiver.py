"""A real HTTP server on loopback that records the webhooks it receives."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes = b""


@dataclass
class Receiver:
    url: str
    calls: list[Received] = field(default_factory=list)
    started: list[float] = field(default_factory=list)
    refused: list[Received] = field(default_factory=list)  # answered 503 (`refuse_first`)

    @property
    def receiving(self) -> bool:
        """A request has arrived (it may still be held by `delay`)."""
        return bool(self.started)

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} webhook calls, got {len(self.calls)}")
            time.sleep(0.02)
        return self.calls

    async def arrived(self, count: int, timeout: float = 30) -> list[Received]:
        """`wait_for` that lets the test's event loop (and an in-process worker) run."""
        deadline = time.monotonic() + timeout
        while len(self.calls) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} webhook calls, got {len(self.calls)}")
            await asyncio.sleep(0.02)
        return self.calls


@contextmanager
def webhook_receiver(
    refuse_first: int = 0, redirect_to: str | None = None, delay: float = 0.0
) -> Iterator[Receiver]:
    """Records POSTs. `refuse_first`: answer 503 to that many requests first; `redirect_to`:
    answer 307 to there; `delay`: seconds to wait before answering."""
    calls: list[Received] = []
    started: list[float] = []
    refusals: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            started.append(time.monotonic())
            time.sleep(delay)
            length = int(self.headers.get("content-length", 0))
            raw = self.rfile.read(length)
            received = Received(
                self.path, dict(self.headers.items()), json.loads(raw or b"null"), raw
            )
            if len(refusals) < refuse_first:
                refusals.append(received)
                self.send_response(503)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            if redirect_to:
                self.send_response(307)
                self.send_header("location", redirect_to)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            calls.append(received)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(
            url=f"http://127.0.0.1:{server.server_address[1]}/hook",
            calls=calls,
            started=started,
            refused=refusals,
        )
    finally:
        server.shutdown()
        server.server_close()
