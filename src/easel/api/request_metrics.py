"""Every HTTP request counted and timed by method, route template and status (a pure ASGI
middleware: streamed bodies and errors raised before a response are counted too)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from easel import metrics


class RequestMetrics:
    """The outermost of the app's middleware; the route is known once the router has run."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an error the server answers with 500

        async def send_seen(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics.HTTP_IN_PROGRESS.inc()
        try:
            await self.app(scope, receive, send_seen)
        finally:
            metrics.HTTP_IN_PROGRESS.dec()
            method = metrics.method_label(scope["method"])
            route = metrics.route_label(scope)
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)
