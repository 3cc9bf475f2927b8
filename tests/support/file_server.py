"""A real HTTP server on loopback that serves canned responses: files, errors, redirects, and
bodies that are slow or larger than they should be."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    """`body` sent `repeat` times in chunks of `chunk` bytes, `delay` seconds before each;
    `length` False leaves out Content-Length (the body ends when the connection closes)."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    repeat: int = 1
    chunk: int = 64 * 1024
    delay: float = 0.0
    length: bool = True


@dataclass
class FileServer:
    base: str
    sent: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


@contextmanager
def file_server(routes: dict[str, Route]) -> Iterator[FileServer]:
    """Serves `routes` by path (404 elsewhere); `sent` counts the body bytes written per path."""
    server_box: list[FileServer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?")[0], Route(b"not here", status=404))
            files = server_box[0]
            files.sent.setdefault(self.path, 0)
            self.send_response(route.status)
            for name, value in route.headers.items():
                self.send_header(name, value)
            if route.length:
                self.send_header("content-length", str(len(route.body) * route.repeat))
            self.end_headers()
            try:
                for _ in range(route.repeat):
                    for start in range(0, len(route.body), route.chunk):
                        time.sleep(route.delay)
                        piece = route.body[start : start + route.chunk]
                        self.wfile.write(piece)
                        files.sent[self.path] += len(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading, as it should past its limits

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server_box.append(FileServer(base=f"http://127.0.0.1:{httpd.server_address[1]}"))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server_box[0]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
