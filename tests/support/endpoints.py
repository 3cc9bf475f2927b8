"""Real HTTP/1.1 webhook endpoints on loopback, many on one event loop in a thread (or in a
process of their own, for benchmarks): healthy ones that answer after a delay and count the
webhook-ids they accepted, failing ones (500) and hanging ones that accept connections, read the
request and never answer. Each tracks how many requests it holds at once."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["ok", "fail", "hang", "flood"]  # flood: 200 with a body that never ends


@dataclass
class Endpoint:
    """One listening port. `mode` may be changed while it runs."""

    mode: Mode
    delay: float = 0.0
    url: str = ""
    accepted: list[str] = field(default_factory=list)  # webhook-ids answered 2xx, in order
    received: list[str] = field(default_factory=list)  # every webhook-id, any answer
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each request
    alone: list[bool] = field(default_factory=list)  # each request: the only one held then
    active: int = 0
    max_active: int = 0
    connections: int = 0
    # Set on close: hanging requests end, open connections are closed (no task is cancelled).
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    def reset_max(self) -> None:
        self.max_active = self.active

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while not self.closing.is_set():
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                await reader.readexactly(int(headers.get("content-length", "0")))
                webhook_id = headers.get("webhook-id", "")
                self.active += 1
                self.max_active = max(self.max_active, self.active)
                self.received.append(webhook_id)
                self.arrivals.append(time.monotonic())
                self.alone.append(self.active == 1)
                try:
                    if self.mode == "hang":  # until the client gives up (EOF) or close()
                        waits = {
                            asyncio.ensure_future(self.closing.wait()),
                            asyncio.ensure_future(reader.read(1)),
                        }
                        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                        for wait in pending:
                            wait.cancel()
                        return
                    if self.mode == "flood":
                        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000\r\n\r\n")
                        while not self.closing.is_set():
                            writer.write(b"x" * 65536)
                            await writer.drain()
                    await asyncio.sleep(self.delay)
                    ok = self.mode == "ok"
                    if ok:
                        self.accepted.append(webhook_id)
                finally:
                    self.active -= 1
                body = b"" if ok else b"receiver broke"
                status = b"200 OK" if ok else b"500 Internal Server Error"
                writer.write(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\ncontent-length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            self.writers.discard(writer)
            self.handlers.discard(task)


class Endpoints:
    """Endpoints served by one event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[asyncio.Server] = []
        self.endpoints: list[Endpoint] = []

    def add(self, mode: Mode, delay: float = 0.0) -> Endpoint:
        async def start() -> tuple[Endpoint, asyncio.Server]:
            endpoint = Endpoint(mode, delay)  # its Event belongs to this loop
            server = await asyncio.start_server(endpoint.handle, "127.0.0.1", 0, backlog=1024)
            return endpoint, server

        endpoint, server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.endpoints.append(endpoint)
        self.servers.append(server)
        endpoint.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
        return endpoint

    def close(self) -> None:
        async def stop() -> None:
            for server in self.servers:
                server.close()
            for endpoint in self.endpoints:
                endpoint.closing.set()
                for writer in list(endpoint.writers):
                    writer.close()
            handlers = [t for e in self.endpoints for t in e.handlers]
            if handlers:
                await asyncio.wait(handlers, timeout=5)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def loopback_endpoints() -> Iterator[Endpoints]:
    endpoints = Endpoints()
    try:
        yield endpoints
    finally:
        endpoints.close()


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check()` every 20 ms, letting the test's event loop run, until it is true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check()` every 20 ms until it is true (blocking: for tests without a loop)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
