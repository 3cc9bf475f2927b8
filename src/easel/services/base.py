"""What a service is, and the small loops services share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Service(Protocol):
    """Runs until `stop` is set; returning early or raising means it died."""

    name: str

    async def run(self, stop: asyncio.Event) -> None: ...


class Periodic:
    """`step` every `interval` seconds; a failed pass is logged and tried again at the next."""

    def __init__(self, name: str, interval: float, step: Callable[[], Awaitable[object]]) -> None:
        self.name, self.interval, self.step = name, interval, step

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.step()
            except Exception:
                log.exception(
                    "service pass failed", extra={"action": "service", "service": self.name}
                )
            await wait_any(stop, timeout=self.interval)


async def wait_any(*events: asyncio.Event, timeout: float) -> None:
    """Until one of `events` is set, or `timeout` seconds."""
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
