"""What the user commands show while orders go on: a rich progress display for people (the queue
position while pending, a step bar while running, one line per file as it lands), or one JSON
object per line for scripts (`--json`)."""

from __future__ import annotations

import json
import sys
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from easel.client.downloads import DownloadedFile
from easel.client.events import PROGRESS, QUEUED, STARTED, Event
from easel.client.models import COMPLETED, OrderStatus


class Display(Protocol):
    def __enter__(self) -> Display: ...
    def __exit__(self, *exc: object) -> None: ...
    def submitted(self, order_id: str, key: str | None, replayed: bool) -> None: ...
    def event(self, order_id: str, event: Event) -> None: ...
    def file(self, order_id: str, file: DownloadedFile) -> None: ...
    def note(self, message: str, **fields: Any) -> None: ...


class RichDisplay:
    """Progress bars on the terminal (nothing animated when the output is not one) and lines
    that stay: submitted, each file, how each order ended."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.fields[order]}"),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _task(self, order_id: str) -> TaskID:
        if order_id not in self.tasks:
            self.tasks[order_id] = self.progress.add_task("submitted", total=None, order=order_id)
        return self.tasks[order_id]

    def submitted(self, order_id: str, key: str | None, replayed: bool) -> None:
        again = " (already placed: re-attached, not charged again)" if replayed else ""
        self.console.print(f"submitted {order_id}{again}")
        self._task(order_id)

    def event(self, order_id: str, event: Event) -> None:
        task = self._task(order_id)
        if event.name == QUEUED:
            position = event.queue_position
            where = f"queued, position {position}" if position else "queued"
            self.progress.update(task, description=where, total=None, completed=0)
        elif event.name == STARTED:
            self.progress.update(task, description="running", total=None, completed=0)
        elif event.name == PROGRESS:
            total = event.total_steps or None
            self.progress.update(task, description="step", total=total, completed=event.step)
        elif event.order is not None:
            self.progress.update(task, visible=False)
            self.console.print(ended(event.order))

    def file(self, order_id: str, file: DownloadedFile) -> None:
        kept = "" if file.fetched else " (already there)"
        self.console.print(
            f"  saved seed {file.seed}  {file.width}x{file.height}  {escape(str(file.path))}{kept}"
        )

    def note(self, message: str, **fields: Any) -> None:
        self.console.print(escape(message))


def ended(order: OrderStatus) -> str:
    if order.status == COMPLETED:
        images = len(order.outputs or order.output_urls or [])
        return f"[green]{order.order_id} completed[/]: {images} file(s), cost {order.cost}"
    error = order.error
    why = (error.message if error else None) or ""
    return f"[red]{order.order_id} {order.status}[/]: {escape(why)} (refunded)"


class OrderIds:
    """`--no-wait`: each order id on its own line, nothing else."""

    def __enter__(self) -> OrderIds:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def submitted(self, order_id: str, key: str | None, replayed: bool) -> None:
        sys.stdout.write(order_id + "\n")
        sys.stdout.flush()

    def event(self, order_id: str, event: Event) -> None:
        pass

    def file(self, order_id: str, file: DownloadedFile) -> None:
        pass

    def note(self, message: str, **fields: Any) -> None:
        sys.stderr.write(message + "\n")


class JsonLines:
    """One JSON object per line on stdout, each with an `event`: submitted, the order events
    (queued, started, progress, completed, failed, canceled), file, note."""

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def emit(self, line: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    def submitted(self, order_id: str, key: str | None, replayed: bool) -> None:
        line = {"event": "submitted", "order_id": order_id, "idempotency_key": key}
        self.emit(line | {"replayed": replayed})

    def event(self, order_id: str, event: Event) -> None:
        self.emit({"event": event.name} | event.data | {"order_id": order_id})

    def file(self, order_id: str, file: DownloadedFile) -> None:
        self.emit(
            {
                "event": "file",
                "order_id": order_id,
                "path": str(file.path),
                "index": file.index,
                "seed": file.seed,
                "width": file.width,
                "height": file.height,
                "content_type": file.content_type,
                "fetched": file.fetched,
            }
        )

    def note(self, message: str, **fields: Any) -> None:
        self.emit({"event": "note", "message": message} | fields)
