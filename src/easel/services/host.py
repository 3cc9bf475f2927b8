"""Run services side by side until stopped; if one dies, stop the others and fail the process
(its supervisor, `easel serve` or the operator's, starts it again)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from easel.services.base import Service

log = logging.getLogger(__name__)


class ServiceDied(RuntimeError):
    """A service returned or raised while the process was not stopping."""


async def run_services(services: Sequence[Service], stop: asyncio.Event) -> None:
    """Until `stop` is set (each service finishes what it has in hand) or a service dies."""
    tasks = {asyncio.create_task(s.run(stop), name=s.name): s for s in services}
    log.info("services started", extra={"action": "start", "services": [s.name for s in services]})
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            task = next(iter(done))
            name = tasks[task].name
            error = task.exception() if not task.cancelled() else None
            log.error(
                "service died; stopping the process",
                extra={"action": "service_died", "service": name},
                exc_info=error,
            )
            raise ServiceDied(f"service {name!r} stopped unexpectedly: {error!r}") from error
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        log.info("services stopped", extra={"action": "stop"})
