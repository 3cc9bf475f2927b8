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
        task = next(iter(done))
        error = None if task.cancelled() else task.exception()
        if error is not None or not stop.is_set():
            died(tasks[task].name, error)
    finally:
        stop.set()
        ends = await asyncio.gather(*tasks, return_exceptions=True)
        log.info("services stopped", extra={"action": "stop"})
    for service, end in zip(tasks.values(), ends, strict=True):
        if isinstance(end, Exception):  # failed while stopping
            died(service.name, end)


def died(name: str, error: BaseException | None) -> None:
    log.error(
        "service died; stopping the process",
        extra={"action": "service_died", "service": name},
        exc_info=error,
    )
    raise ServiceDied(f"service {name!r} stopped unexpectedly: {error!r}") from error
