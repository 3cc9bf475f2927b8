"""A loopback TCP proxy in front of a server that misbehaves on request, as networks do: it can
let a request through and then drop its response (the client sees the connection close with no
answer), or cut an events stream once a given event went through. One request per connection
(it asks the server to close after answering), so each rule applies to exactly one request."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Proxy:
    url: str
    upstream: tuple[str, int]
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) seen
    dropped: list[tuple[str, str]] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)  # paths of streams cut
    _drops: dict[tuple[str, str], int] = field(default_factory=dict)
    _cut_after: bytes | None = None

    def drop_responses(self, method: str, path: str, count: int = 1) -> None:
        """Forward the next `count` `method path` requests, then close without an answer."""
        self._drops[(method, path)] = count

    def cut_streams_after(self, marker: bytes | None) -> None:
        """End every events stream (mid-body, no clean end) once `marker` went through."""
        self._cut_after = marker

    def paths(self, prefix: str) -> list[str]:
        return [p for _, p in self.requests if p.startswith(prefix)]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._relay(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        path = urlsplit(target).path
        length = 0
        kept = [lines[0]]
        for line in lines[1:]:
            name = line.partition(":")[0].strip().lower()
            if name == "content-length":
                length = int(line.partition(":")[2])
            if line and name != "connection":
                kept.append(line)
        body = await reader.readexactly(length) if length else b""
        self.requests.append((method, path))
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            request = "\r\n".join([*kept, "Connection: close", "", ""]).encode("latin-1")
            up_writer.write(request + body)
            await up_writer.drain()
            if self._drops.get((method, path), 0) > 0:
                self._drops[(method, path)] -= 1
                await up_reader.read()  # the server answers in full; the client gets nothing
                self.dropped.append((method, path))
                return  # closed by handle(): the connection ends with no answer
            streaming = path.endswith("/events") and self._cut_after is not None
            seen = b""
            while chunk := await up_reader.read(65536):
                writer.write(chunk)
                await writer.drain()
                if streaming and self._cut_after:
                    seen += chunk
                    if self._cut_after in seen:
                        self.cut.append(path)
                        return  # closed by handle(): the chunked body never ends
        finally:
            up_writer.close()


@contextmanager
def loopback_proxy(upstream_url: str) -> Iterator[Proxy]:
    """A proxy on a free loopback port in front of `upstream_url`, in a thread of its own."""
    parts = urlsplit(upstream_url)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def start() -> None:
        proxy = Proxy(url="", upstream=(parts.hostname or "127.0.0.1", parts.port or 80))
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proxy.url = f"http://127.0.0.1:{port}"
        holder.update(proxy=proxy, server=server)
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    ready.wait(10)
    try:
        proxy = holder["proxy"]
        assert isinstance(proxy, Proxy)
        yield proxy
    finally:
        server = holder["server"]
        assert isinstance(server, asyncio.Server)

        async def stop() -> None:
            server.close()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
