"""A cap on request bodies, counted as they arrive (Content-Length can be absent or wrong)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from easel.errors import PayloadTooLarge


class BodyLimit:
    """Raises PayloadTooLarge (413, in the dialect's error shape) from the route's body read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge(
                        f"the request body is larger than {self.max_bytes} bytes "
                        "(EASEL_MAX_BODY_BYTES); send smaller images or a URL instead"
                    )
            return message

        await self.app(scope, counted, send)
