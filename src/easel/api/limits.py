"""Caps on request bodies, counted as they arrive (Content-Length can be absent or wrong): the
size of any body, and the structural characters of a JSON one, so that junk with thousands of
keys is refused after its first chunks instead of being read, parsed and validated."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from easel.errors import InvalidRequest, PayloadTooLarge


def is_json(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def json_budget(max_members: int, max_prompt_chars: int) -> int:
    """Structural characters (`{ [ : ,`) a JSON body may hold: its members, plus the
    punctuation of a few prompt-sized texts."""
    return max_members + 4 * max_prompt_chars


def count_structural(chunk: bytes) -> int:
    return sum(chunk.count(c) for c in (b"{", b"[", b":", b","))


class BodyLimit:
    """Raises PayloadTooLarge (413) or InvalidRequest (422), in the dialect's error shape, from
    the route's body read."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_json_bytes: int, json_budget: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_bytes = max_json_bytes
        self.json_budget = json_budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        json_body = is_json(headers.get(b"content-type", b"").decode("latin-1"))
        seen = structural = 0

        async def counted() -> Message:
            nonlocal seen, structural
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                seen += len(chunk)
                if seen > self.max_bytes:
                    raise PayloadTooLarge(
                        f"the request body is larger than {self.max_bytes} bytes "
                        "(EASEL_MAX_BODY_BYTES); send smaller images or a URL instead"
                    )
                if json_body:
                    if seen > self.max_json_bytes:
                        raise PayloadTooLarge(
                            f"the JSON body is larger than {self.max_json_bytes} bytes "
                            "(EASEL_MAX_JSON_BYTES); send a reference image by URL instead"
                        )
                    structural += count_structural(chunk)
                    if structural > self.json_budget:
                        raise InvalidRequest(TOO_MANY_MEMBERS)
            return message

        await self.app(scope, counted, send)


TOO_MANY_MEMBERS = (
    "the JSON body has far more members (keys and array items) than EASEL_MAX_JSON_MEMBERS "
    "allows; send only the fields the API documents"
)
