"""`AsyncOrder`: a handle on one order of the asyncio client; `Order`'s twin."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from easel.client.downloads import DownloadedFile, downloaded, output_path
from easel.client.errors import (
    ServerError,
    WaitTimeout,
)
from easel.client.events import TIMEOUT, Changes, Event, SSEDecoder
from easel.client.models import Canceled, Created, OrderStatus
from easel.client.options import LONG_POLL_SECONDS, Options
from easel.client.order import FRESH_SECONDS, STREAM_OPENS, check, outputs_of

if TYPE_CHECKING:
    from easel.client.async_client import AsyncEasel


class AsyncOrder:
    """One order. `data` is the order as last read (None until read); `created` is the
    answer of the submit when this handle came from `generate` (`replayed`: the server
    recognised the Idempotency-Key and returned the order it had already made)."""

    def __init__(
        self,
        client: AsyncEasel,
        order_id: str,
        *,
        created: Created | None = None,
        key: str | None = None,
        replayed: bool = False,
    ) -> None:
        self.client = client
        self.id = order_id
        self.created = created
        self.idempotency_key = key
        self.replayed = replayed
        self.data: OrderStatus | None = None
        self._read_at = 0.0

    def __repr__(self) -> str:
        return f"<AsyncOrder {self.id} {self.status}>"

    @property
    def status(self) -> str:
        """pending / running / completed / failed / canceled, as last read."""
        if self.data is not None:
            return self.data.status
        return self.created.status if self.created else "unknown"

    def _seen(self, data: OrderStatus) -> OrderStatus:
        self.data, self._read_at = data, time.monotonic()
        return data

    async def refresh(self, *, wait: float = 0) -> OrderStatus:
        """Read the order now (`wait` > 0: a long poll, answered when it changes)."""
        params = {"wait": wait} if wait > 0 else None
        read = self.options.timeout + wait
        response = await self.client.request(
            "GET", f"/api/v1/status/{self.id}", params=params, read_timeout=read
        )
        return self._seen(OrderStatus.model_validate(response.json()))

    @property
    def options(self) -> Options:
        return self.client.options

    async def cancel(self) -> Canceled:
        """Pending: canceled and refunded at once; running: stopped at its next step."""
        return await self.client.orders.cancel(self.id)

    async def events(self, timeout: float | None = None) -> AsyncIterator[Event]:
        """Each change of the order until it ends (the last event is `completed`, `failed` or
        `canceled`), from the server-sent events stream; when the stream drops, from status
        reads. WaitTimeout after `timeout` seconds (default: the client's `wait_timeout`)."""
        deadline = time.monotonic() + (timeout or self.options.wait_timeout)
        changes = Changes()
        outcome = ["again"]
        opens = 0
        while outcome[0] == "again" and opens < STREAM_OPENS:
            opens += 1
            async for event in self._stream(changes, deadline, outcome):
                yield event
            if outcome[0] == "done":
                return
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"order {self.id} is still {self.status} after the wait")
            began = time.monotonic()
            order = await self.refresh(wait=min(LONG_POLL_SECONDS, left))
            told = changes.from_status(order)
            for event in told:
                yield event
            if changes.done:
                return
            if not told:  # a server without long polls answers at once
                pause = self.options.poll_interval - (time.monotonic() - began)
                await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))

    async def _stream(
        self, changes: Changes, deadline: float, outcome: list[str]
    ) -> AsyncIterator[Event]:
        """Events from one stream; `outcome[0]` becomes "done", "again" (it ended with
        `timeout`: open it again) or "dropped" (fall back to status reads)."""
        decoder = SSEDecoder()
        outcome[0] = "dropped"
        read_timeout = min(self.options.stream_timeout, max(0.1, deadline - time.monotonic()))
        try:
            async with self.client.stream_events(self.id, read_timeout) as response:
                async for line in response.aiter_lines():
                    item = decoder.feed(line)
                    if item is not None:
                        name, data = item
                        for event in changes.from_stream(name, data):
                            if event.order is not None:
                                self._seen(event.order)
                            yield event
                        if changes.done:
                            outcome[0] = "done"
                            return
                        if name == TIMEOUT:
                            outcome[0] = "again"
                            return
                    if time.monotonic() > deadline:
                        raise WaitTimeout(f"order {self.id} is still {self.status} after the wait")
        except (httpx.TransportError, ServerError):
            if time.monotonic() > deadline:
                raise WaitTimeout(
                    f"order {self.id} is still {self.status} after the wait"
                ) from None

    async def wait(
        self, timeout: float | None = None, *, raise_on_failure: bool = True
    ) -> OrderStatus:
        """The order once it ended. OrderFailed / OrderCanceled when it did not complete (unless
        not `raise_on_failure`); WaitTimeout after `timeout` seconds (the order goes on)."""
        if self.data is None or not self.data.final:
            async for _ in self.events(timeout):
                pass  # the last event is the final one
        assert self.data is not None
        if raise_on_failure:
            check(self.data)
        return self.data

    async def download(
        self, directory: str | Path = ".", *, timeout: float | None = None
    ) -> list[DownloadedFile]:
        """Write each output to `directory` as `<order id>_<index>_seed<seed>.<ext>`, waiting
        for the order first; files already there are kept. OrderFailed when it did not
        complete, NotFound when its outputs expired."""
        return [file async for file in self.downloads(directory, timeout=timeout)]

    async def downloads(
        self, directory: str | Path = ".", *, timeout: float | None = None
    ) -> AsyncIterator[DownloadedFile]:
        """`download`, one file at a time as each is written."""
        order = await self.wait(timeout)
        if time.monotonic() - self._read_at > FRESH_SECONDS:
            order = await self.refresh()  # output URLs are signed for a while only
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for index, output in enumerate(outputs_of(order)):
            path = output_path(directory, self.id, index, output)
            fetched = not path.exists()
            if fetched:
                await self.client.fetch_to(output.url, path)
            yield downloaded(path, index, output, fetched)
