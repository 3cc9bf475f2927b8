"""Order events (docs/events.md): parsed from the server-sent events stream, or derived from
status reads when the stream is not there; either way each change is told once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from easel.client.models import FINAL, PENDING, RUNNING, OrderStatus

QUEUED, STARTED, PROGRESS, TIMEOUT = "queued", "started", "progress", "timeout"


@dataclass(frozen=True)
class Event:
    """One change of an order: `name` is `queued`, `started`, `progress`, `completed`, `failed`
    or `canceled`; `data` is the event's JSON object; `order` is set on the final event."""

    name: str
    data: dict[str, Any]
    order: OrderStatus | None = None

    @property
    def order_id(self) -> str:
        return str(self.data.get("order_id", ""))

    @property
    def final(self) -> bool:
        return self.name in FINAL

    @property
    def queue_position(self) -> int | None:
        value = self.data.get("queue_position")
        return int(value) if value is not None else None

    @property
    def step(self) -> int:
        return int(self.data.get("step") or 0)

    @property
    def total_steps(self) -> int:
        return int(self.data.get("total_steps") or 0)

    @property
    def percent(self) -> int:
        return int(self.data.get("percent") or 0)


class SSEDecoder:
    """A text/event-stream read line by line: `feed` returns (event name, data) when an event
    ends; comment lines (keep-alives) are skipped."""

    def __init__(self) -> None:
        self.name = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, dict[str, Any]] | None:
        if line:
            if not line.startswith(":"):
                key, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if key == "event":
                    self.name = value
                elif key == "data":
                    self.data.append(value)
            return None
        event = None
        if self.data:
            decoded = json.loads("\n".join(self.data))
            event = (self.name, decoded if isinstance(decoded, dict) else {"data": decoded})
        self.name, self.data = "message", []
        return event


@dataclass
class Changes:
    """What the caller has been told. A reopened stream starts again from where the order is,
    and polling sees only snapshots: both pass through here, so each change is told once and
    `step` only grows within an attempt."""

    status: str = ""
    position: int | None = None
    attempt: int = 0
    step: int = 0
    done: bool = False

    def from_stream(self, name: str, data: dict[str, Any]) -> list[Event]:
        """The events to tell for one event of the stream (none when it repeats one)."""
        if self.done:
            return []
        if name == QUEUED:
            position = data.get("queue_position")
            if self.status == PENDING and position == self.position:
                return []
            self.status, self.position, self.step = PENDING, position, 0
            return [Event(name, data)]
        if name == STARTED:
            attempt = int(data.get("attempt") or 0)
            if self.status == RUNNING and attempt <= self.attempt:
                return []
            self.status, self.attempt, self.step = RUNNING, max(attempt, self.attempt), 0
            return [Event(name, data)]
        if name == PROGRESS:
            step = int(data.get("step") or 0)
            if step <= self.step:
                return []
            self.status, self.step = RUNNING, step
            return [Event(name, data)]
        if name in FINAL:
            self.done, self.status = True, name
            return [Event(name, data, OrderStatus.model_validate(data))]
        if name == TIMEOUT:
            return []
        return [Event(name, data)]  # an event this client does not know yet

    def from_status(self, order: OrderStatus) -> list[Event]:
        """The events a status read implies (as the server derives its stream)."""
        about: dict[str, Any] = {"order_id": order.order_id}
        out: list[Event] = []
        if order.status == PENDING:
            queued = {"status": PENDING, "queue_position": order.queue_position}
            out += self.from_stream(QUEUED, about | queued)
            return out
        if order.started_at and order.attempts:
            started = {"status": RUNNING, "started_at": order.started_at}
            out += self.from_stream(STARTED, about | started | {"attempt": order.attempts})
        if order.total_steps and order.step:
            progress = {"step": order.step, "total_steps": order.total_steps}
            out += self.from_stream(PROGRESS, about | progress | {"percent": order.progress})
        if order.final:
            out += self.from_stream(order.status, order.model_dump(exclude_unset=True))
        return out
