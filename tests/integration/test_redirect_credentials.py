"""Outbound redirects (net/pinned.send_checked) keep credentials on their own origin only, and a
303 turns a POST into a GET without its body, as httpx and browsers do."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from easel.net.pinned import send_checked
from easel.net.policy import URLPolicy

pytestmark = pytest.mark.anyio

LOOPBACK = URLPolicy(allowed_networks=("127.0.0.0/8",))


@contextmanager
def server(location: str = "", status: int = 307) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """Records each request's method, Authorization and body; redirects to `location` if set."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            auth = self.headers.get("authorization") or ""
            seen.append({"method": self.command, "auth": auth, "body": body, "path": self.path})
            if location and self.path == "/start":
                self.send_response(status)
                self.send_header("location", location)
                self.send_header("content-length", "0")
            else:
                self.send_response(200)
                self.send_header("content-length", "0")
            self.end_headers()

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


async def post(url: str) -> int:
    async with httpx.AsyncClient() as client:
        response = await send_checked(
            client,
            "POST",
            url,
            "url",
            LOOPBACK,
            max_redirects=3,
            headers={"authorization": "Bearer secret", "content-type": "application/json"},
            content=b'{"x": 1}',
        )
        await response.aclose()
        return response.status_code


async def test_a_redirect_to_another_origin_drops_the_credentials() -> None:
    with server() as (other, seen_other), server(f"{other}/next") as (start, seen_start):
        assert await post(f"{start}/start") == 200
    assert seen_start == [
        {"method": "POST", "auth": "Bearer secret", "body": '{"x": 1}', "path": "/start"}
    ]
    assert seen_other == [{"method": "POST", "auth": "", "body": '{"x": 1}', "path": "/next"}]


async def test_a_redirect_on_the_same_origin_keeps_them() -> None:
    with server("/next") as (start, seen):
        assert await post(f"{start}/start") == 200
    assert [(s["path"], s["auth"]) for s in seen] == [
        ("/start", "Bearer secret"),
        ("/next", "Bearer secret"),
    ]


async def test_a_303_turns_the_post_into_a_get_without_its_body() -> None:
    with server("/next", status=303) as (start, seen):
        assert await post(f"{start}/start") == 200
    assert [(s["method"], s["body"]) for s in seen] == [("POST", '{"x": 1}'), ("GET", "")]
