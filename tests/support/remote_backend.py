"""A backend that waits on a remote HTTP API, as an upstream provider's does: a real image server
on loopback that takes its time and counts the requests it holds at once, and the backend class
that calls it. Register it for a test's catalog family with `register(monkeypatch)`."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
from PIL import Image

from easel.backends import registry
from easel.backends.base import Backend, Job, ProgressFn
from easel.media.encoding import GeneratedImage

FAMILY = "remote-test"
PATH = f"{__name__}:RemoteImageBackend"


class RemoteImageBackend(Backend):
    family = FAMILY
    local: ClassVar[bool] = False
    max_in_flight: ClassVar[int] = 4

    def load(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.model.source, timeout=30)

    async def generate(self, job: Job, progress: ProgressFn) -> list[GeneratedImage]:
        images = []
        for number, spec in enumerate(job.images):
            size = {"width": job.width, "height": job.height, "seed": spec.seed}
            response = await self.client.post("/render", json=size)
            response.raise_for_status()
            images.append(
                GeneratedImage(response.content, "image/png", spec.seed, job.width, job.height)
            )
            await progress(number + 1, len(job.images))
        return images


@dataclass
class ImageServer:
    url: str
    peak: int = 0  # most requests held at once
    served: int = 0
    _holding: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self) -> None:
        with self._lock:
            self._holding += 1
            self.peak = max(self.peak, self._holding)

    def leave(self) -> None:
        with self._lock:
            self._holding -= 1
            self.served += 1


@contextmanager
def image_server(delay: float = 0.4) -> Iterator[ImageServer]:
    """POST /render {width, height, seed} -> a PNG of that size, after `delay` seconds."""
    box: list[ImageServer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            server = box[0]
            server.enter()
            try:
                asked = json.loads(self.rfile.read(int(self.headers["content-length"])))
                time.sleep(delay)
                color = (asked["seed"] % 256, 80, 160)
                buf = io.BytesIO()
                Image.new("RGB", (asked["width"], asked["height"]), color).save(buf, "PNG")
                body = buf.getvalue()
            finally:
                server.leave()
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.append(ImageServer(url=f"http://127.0.0.1:{http.server_address[1]}"))
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield box[0]
    finally:
        http.shutdown()
        http.server_close()


def register(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.FAMILIES, FAMILY, PATH)


def catalog_table(url: str, model_id: str = "remote-x", style: str = "remote") -> str:
    """A `[models.…]` table of this family for `tiny_catalog(extra=...)`."""
    return (
        f'[models.{model_id}]\nfamily = "{FAMILY}"\nsource = "{url}"\nstyles = ["{style}"]\n'
        "steps = 1\nwidth = 256\nheight = 256\n"
    )
