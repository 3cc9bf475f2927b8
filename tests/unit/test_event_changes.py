"""Which events a sequence of status bodies makes: retries, late joins, queue moves."""

from __future__ import annotations

from typing import Any

from easel.api.routes.events import Changes


def body(status: str, **kw: Any) -> dict[str, Any]:
    base = {
        "order_id": "ORD-1",
        "status": status,
        "queue_position": None,
        "started_at": None,
        "attempts": 0,
        "step": 0,
        "total_steps": 0,
        "progress": 0,
    }
    return base | kw


def names(changes: Changes, *bodies: dict[str, Any]) -> list[str]:
    return [name for b in bodies for name, _ in changes.events(b)]


def test_queue_moves_then_a_retry_after_a_lost_worker_starts_again() -> None:
    run = {"started_at": "2026-01-01T00:00:00Z", "total_steps": 4}
    got = names(
        Changes(),
        body("pending", queue_position=3),
        body("pending", queue_position=3),
        body("pending", queue_position=1),
        body("running", attempts=1, step=2, progress=50, **run),
        body("pending", queue_position=1, attempts=1, **run),
        body("running", attempts=2, step=1, progress=25, **run),
        body("running", attempts=2, step=1, progress=25, **run),
        body("completed", attempts=2, step=4, progress=100, **run),
    )
    assert got == [
        "queued",
        "queued",
        "started",
        "progress",
        "queued",
        "started",
        "progress",
        "progress",
        "completed",
    ]


def test_a_late_stream_on_a_finished_order() -> None:
    run = {"started_at": "2026-01-01T00:00:00Z", "attempts": 1, "total_steps": 4}
    changes = Changes()
    events = changes.events(body("completed", step=4, progress=100, **run))
    assert [name for name, _ in events] == ["started", "progress", "completed"]
    assert events[1][1] == {"order_id": "ORD-1", "step": 4, "total_steps": 4, "percent": 100}
    assert names(Changes(), body("canceled", queue_position=None)) == ["canceled"]
