"""`Order`: a handle on one order of the synchronous client."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from easel.client.downloads import DownloadedFile, downloaded, output_path
from easel.client.errors import (
    NotFound,
    OrderCanceled,
    OrderFailed,
    ServerError,
    WaitTimeout,
)
from easel.client.events import TIMEOUT, Changes, Event, SSEDecoder
from easel.client.models import CANCELED, COMPLETED, Canceled, Created, OrderStatus, Output
from easel.client.options import LONG_POLL_SECONDS, Options

if TYPE_CHECKING:
    from easel.client.client import Easel

STREAM_OPENS = 5  # a stream that ends with `timeout` is opened again, this many times in all
FRESH_SECONDS = 60.0  # output URLs read longer ago than this are read again before a download


class Order:
    """One order. `data` is the order as last read (None until read); `created` is the
    answer of the submit when this handle came from `generate` (`replayed`: the server
    recognised the Idempotency-Key and returned the order it had already made)."""

    def __init__(
        self,
        client: Easel,
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
        return f"<Order {self.id} {self.status}>"

    @property
    def status(self) -> str:
        """pending / running / completed / failed / canceled, as last read."""
        if self.data is not None:
            return self.data.status
        return self.created.status if self.created else "unknown"

    def _seen(self, data: OrderStatus) -> OrderStatus:
        self.data, self._read_at = data, time.monotonic()
        return data

    def refresh(self, *, wait: float = 0) -> OrderStatus:
        """Read the order now (`wait` > 0: a long poll, answered when it changes)."""
        params = {"wait": wait} if wait > 0 else None
        read = self.options.timeout + wait
        response = self.client.request(
            "GET", f"/api/v1/status/{self.id}", params=params, read_timeout=read
        )
        return self._seen(OrderStatus.model_validate(response.json()))

    @property
    def options(self) -> Options:
        return self.client.options

    def cancel(self) -> Canceled:
        """Pending: canceled and refunded at once; running: stopped at its next step."""
        return self.client.orders.cancel(self.id)

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Each change of the order until it ends (the last event is `completed`, `failed` or
        `canceled`), from the server-sent events stream; when the stream drops, from status
        reads. WaitTimeout after `timeout` seconds (default: the client's `wait_timeout`)."""
        deadline = time.monotonic() + (timeout or self.options.wait_timeout)
        changes = Changes()
        opens = 0
        streaming = True
        while streaming and opens < STREAM_OPENS:
            opens += 1
            outcome = yield from self._stream(changes, deadline)
            if outcome == "done":
                return
            streaming = outcome == "again"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"order {self.id} is still {self.status} after the wait")
            began = time.monotonic()
            order = self.refresh(wait=min(LONG_POLL_SECONDS, left))
            told = changes.from_status(order)
            yield from told
            if changes.done:
                return
            if not told:  # a server without long polls answers at once
                pause = self.options.poll_interval - (time.monotonic() - began)
                time.sleep(max(0.0, min(pause, deadline - time.monotonic())))

    def _stream(self, changes: Changes, deadline: float) -> Generator[Event, None, str]:
        """Events from one stream; returns "done", "again" (it ended with `timeout`: open it
        again) or "dropped" (fall back to status reads)."""
        decoder = SSEDecoder()
        read_timeout = min(self.options.stream_timeout, max(0.1, deadline - time.monotonic()))
        try:
            with self.client.stream_events(self.id, read_timeout) as response:
                for line in response.iter_lines():
                    item = decoder.feed(line)
                    if item is not None:
                        name, data = item
                        for event in changes.from_stream(name, data):
                            if event.order is not None:
                                self._seen(event.order)
                            yield event
                        if changes.done:
                            return "done"
                        if name == TIMEOUT:
                            return "again"
                    if time.monotonic() > deadline:
                        raise WaitTimeout(f"order {self.id} is still {self.status} after the wait")
        except (httpx.TransportError, ServerError):
            if time.monotonic() > deadline:
                raise WaitTimeout(
                    f"order {self.id} is still {self.status} after the wait"
                ) from None
        return "dropped"

    def wait(self, timeout: float | None = None, *, raise_on_failure: bool = True) -> OrderStatus:
        """The order once it ended. OrderFailed / OrderCanceled when it did not complete (unless
        not `raise_on_failure`); WaitTimeout after `timeout` seconds (the order goes on)."""
        if self.data is None or not self.data.final:
            for _ in self.events(timeout):
                pass  # the last event is the final one
        assert self.data is not None
        if raise_on_failure:
            check(self.data)
        return self.data

    def download(
        self, directory: str | Path = ".", *, timeout: float | None = None
    ) -> list[DownloadedFile]:
        """Write each output to `directory` as `<order id>_<index>_seed<seed>.<ext>`, waiting
        for the order first; files already there are kept. OrderFailed when it did not
        complete, NotFound when its outputs expired."""
        return list(self.downloads(directory, timeout=timeout))

    def downloads(
        self, directory: str | Path = ".", *, timeout: float | None = None
    ) -> Iterator[DownloadedFile]:
        """`download`, one file at a time as each is written."""
        order = self.wait(timeout)
        if time.monotonic() - self._read_at > FRESH_SECONDS:
            order = self.refresh()  # output URLs are signed for a while only
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for index, output in enumerate(outputs_of(order)):
            path = output_path(directory, self.id, index, output)
            fetched = not path.exists()
            if fetched:
                self.client.fetch_to(output.url, path)
            yield downloaded(path, index, output, fetched)


def check(order: OrderStatus) -> None:
    """OrderFailed / OrderCanceled for an order that ended without outputs."""
    if order.status == CANCELED:
        raise OrderCanceled(order)
    if order.final and order.status != COMPLETED:
        raise OrderFailed(order)


def outputs_of(order: OrderStatus) -> list[Output]:
    if order.outputs_expired:
        raise NotFound(order.message or "the outputs expired", status_code=404, code="expired")
    return list(order.outputs or [])
