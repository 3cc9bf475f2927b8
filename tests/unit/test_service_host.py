"""Services run side by side; one that dies stops the others and fails the process."""

from __future__ import annotations

import asyncio

import pytest

from easel.services.base import Periodic
from easel.services.host import ServiceDied, run_services

pytestmark = pytest.mark.anyio


class Steady:
    """Runs until stopped, and records that it was."""

    name = "steady"

    def __init__(self) -> None:
        self.stopped = False

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.stopped = True


class Crashing:
    name = "crashing"

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("lost its database")


async def test_a_dying_service_stops_the_others_and_the_process() -> None:
    steady = Steady()
    stop = asyncio.Event()
    with pytest.raises(ServiceDied, match="crashing"):
        await asyncio.wait_for(run_services([steady, Crashing()], stop), timeout=5)
    assert stop.is_set() and steady.stopped


async def test_stop_ends_every_service_cleanly() -> None:
    passes: list[int] = []

    async def step() -> None:
        passes.append(1)
        if len(passes) == 2:
            raise ValueError("a failed pass is logged and tried again")

    steady, stop = Steady(), asyncio.Event()
    task = asyncio.create_task(run_services([steady, Periodic("ticker", 0.01, step)], stop))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert steady.stopped and len(passes) > 3


class FailingWhileStopping:
    """Sets the shared stop itself, then raises: still a death, not a clean stop."""

    name = "failing"

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(0.05)
        stop.set()
        raise RuntimeError("listener lost")


async def test_a_service_that_fails_while_stopping_still_fails_the_process() -> None:
    with pytest.raises(ServiceDied, match="failing"):
        await asyncio.wait_for(run_services([Steady(), FailingWhileStopping()], asyncio.Event()), 5)
