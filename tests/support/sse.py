"""Read a text/event-stream response as (event name, JSON data) pairs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    name: str
    data: Any


async def read_events(
    response: httpx.Response, comments: list[str] | None = None
) -> AsyncIterator[Event]:
    """Events until the stream ends; comment lines go to `comments` when given."""
    name, data = "message", []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield Event(name, json.loads("\n".join(data)))
            name, data = "message", []
        elif line.startswith(":"):
            if comments is not None:
                comments.append(line[1:].strip())
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
