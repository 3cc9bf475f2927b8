"""Helpers for task APIs that make one image per task (KIE, seed 002's task API): an order of n
images is n tasks, all in one attempt's handle."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from easel.backends.upstream.base import NotAccepted, Remote, RemoteFailed, Response, Status


def envelope(response: Response, who: str) -> dict[str, Any]:
    """`{code, msg, data}`: data when code is 200; otherwise the refusal it stands for. An
    answer that is no such object is a refusal under an HTTP error, and under a 2xx a failure
    (the task may have been taken)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        unreadable = f"{who}: unreadable answer (HTTP {response.status})"
        if 200 <= response.status < 300:
            raise RemoteFailed(unreadable)
        raise NotAccepted(unreadable)
    code = body.get("code", response.status)
    if code == 200 and isinstance(body.get("data"), dict):
        data: dict[str, Any] = body["data"]
        return data
    message = f"{who}: code {code}: {body.get('msg', '')}"
    if code == 429 or (isinstance(code, int) and code >= 500):
        raise NotAccepted(message, retry_after=response.retry_after, same_channel=True)
    if code in (401, 402, 403):
        raise NotAccepted(message)
    raise NotAccepted(message, channel_fault=False)


async def create_tasks(who: str, n: int, create: Callable[[int], Awaitable[str]]) -> Remote:
    """n tasks, each made by `create(index)` (its task id); all their ids in one handle. A refusal
    of the first is the order's refusal; any error on a later one is a failure (the first were
    accepted and may be billed: the order must not go to another channel), as is an answer
    without a task id."""
    tasks: list[str] = []
    for index in range(n):
        try:
            tasks.append(await create(index))
        except KeyError as exc:  # a 200 without an id: the task may have been taken
            raise RemoteFailed(f"{who}: task {index + 1} of {n}: no task id ({exc})") from exc
        except Exception as exc:
            if not tasks:
                raise
            raise RemoteFailed(
                f"{who}: task {index + 1} of {n} was refused after the first were accepted "
                f"({type(exc).__name__}: {exc})"
            ) from exc
    return Remote(tasks[0], handle={"tasks": tasks})


def combine(statuses: list[Status]) -> Status:
    """One status for an order's tasks: failed if any failed, done when all are."""
    failed = [s for s in statuses if s.state == "failed"]
    if failed:
        return Status(
            "failed",
            error=failed[0].error,
            billed=any(s.billed for s in failed) or len(failed) < len(statuses),
            remote_status=failed[0].remote_status,
        )
    if all(s.state == "succeeded" for s in statuses):
        return Status(
            "succeeded",
            outputs=[o for s in statuses for o in s.outputs],
            remote_status=statuses[0].remote_status,
        )
    running = [s for s in statuses if s.state == "running"]
    positions = [s.queue_position for s in statuses if s.queue_position is not None]
    done = sum(s.state == "succeeded" for s in statuses)
    return Status(
        "running" if running or done else "queued",
        queue_position=min(positions) if positions else None,
        progress=done * 100 // len(statuses) if done else None,
        remote_status=(running or statuses)[0].remote_status,
    )
