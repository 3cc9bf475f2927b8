"""Canonical order -> each dialect's task body: what its status endpoint returns and what its
callback receives (the same body, as the seeds describe). Seed 000's lives in views.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from easel.db.tables import Order, Output
from easel.orders.views import iso, native_webhook, output_urls
from easel.storage import Storage

Render = Callable[[Order, list[Output], Storage], dict[str, Any]]

# How each dialect shows a canonical status (DESIGN.md's table).
KIE_FLAGS = {"pending": 0, "running": 0, "completed": 1, "failed": 2, "canceled": 2}
TASK_STATUS = {"pending": 1, "running": 2, "completed": 3, "failed": 4, "canceled": 4}
KIRIN_STATUS = {
    "pending": "submitted",
    "running": "processing",
    "completed": "completed",
    "failed": "failed",
    "canceled": "failed",
}


def iso_seconds(moment: datetime | None) -> str | None:
    return iso(moment.replace(microsecond=0)) if moment else None


def creation_failed(order: Order) -> bool:
    """Seed 001's successFlag 3: no generation could be set up (no start, or no model)."""
    return order.status == "failed" and (
        order.started_at is None or order.error_code == "model_unavailable"
    )


def kie_record(order: Order, outputs: list[Output], storage: Storage) -> dict[str, Any]:
    """Seed 001's record-info body."""
    urls = output_urls(order, outputs, storage)
    flag = 3 if creation_failed(order) else KIE_FLAGS[order.status]
    body: dict[str, Any] = {
        "taskId": order.id,
        "model": order.model_alias,
        "successFlag": flag,
        "progress": order.progress,
        "imageUrl": urls[0] if urls else None,
        "imageUrls": urls,
        "createTime": iso_seconds(order.created_at),
        "completeTime": iso_seconds(order.completed_at),
        "expireTime": iso_seconds(order.outputs_expire_at),
        "param": dict((order.extra or {}).get("request", {})),
    }
    if order.status in ("failed", "canceled"):
        body["errorCode"] = order.error_code
        body["errorMessage"] = order.error_message
    if order.outputs_swept:
        body["errorMessage"] = f"the image expired at {iso_seconds(order.outputs_expire_at)}"
    return body


def task_data(order: Order, outputs: list[Output], storage: Storage) -> dict[str, Any]:
    """Seed 002's task object (`data` of GET /api/v1/tasks/{task_id})."""
    urls = output_urls(order, outputs, storage)
    video = order.task_type == "animation"
    body: dict[str, Any] = {
        "task_id": order.id,
        "task_status": TASK_STATUS[order.status],
        "task_type": "video" if video else "image",
        "model_id": order.model_alias,
        "image_url": None if video or not urls else urls[0],
        "image_urls": [] if video else urls,
        "video_url": urls[0] if video and urls else None,
        "audio_url": None,
        "credits": order.cost_credits,
        "progress": order.progress,
        "created_at": int(order.created_at.timestamp()),
        "completed_at": int(order.completed_at.timestamp()) if order.completed_at else None,
    }
    if order.status in ("failed", "canceled"):
        body["error"] = {"code": order.error_code, "message": order.error_message}
    return body


def kirin_task(order: Order, outputs: list[Output], storage: Storage) -> dict[str, Any]:
    """Seed 004's task: `error` only when failed, `output` and `usage` only when completed."""
    body: dict[str, Any] = {
        "task_id": order.id,
        "external_task_id": order.external_task_id,
        "model": order.model_alias,
        "status": KIRIN_STATUS[order.status],
        "progress": order.progress,
        "created_at": iso_seconds(order.created_at),
        "completed_at": iso_seconds(order.completed_at),
    }
    if order.status in ("failed", "canceled"):
        body["error"] = {"code": order.error_code, "error_message": order.error_message}
    elif order.status == "completed":
        urls = output_urls(order, outputs, storage)
        body["output"] = {
            "content": [{"type": "image", "url": url} for url in urls],
            "jobId": order.id,
        }
        body["usage"] = {"images": len(outputs), "credits": order.cost_credits}
        if order.outputs_swept:
            body["outputs_expired"] = True
    return body


def kie_body(order: Order, outputs: list[Output], storage: Storage) -> dict[str, Any]:
    """record-info's response and callback: the `{code, msg, data}` envelope, with the record's
    fields repeated at the top level as seed 001's example shows them."""
    record = kie_record(order, outputs, storage)
    return {"code": 200, "msg": "success", "data": record, **record}


WEBHOOK_BODIES: dict[str, Render] = {
    "native": native_webhook,
    "kie": kie_body,
    "tasks": task_data,
    "kirin": kirin_task,
}

# OpenAI Images has no callbacks; a webhook_url given there gets the native payload.
# Dialects whose callback reports every status change, not only the final one (seed 004).
NOTIFY_ON_START = frozenset({"kirin"})


def webhook_payload(order: Order, outputs: list[Output], storage: Storage) -> dict[str, Any]:
    return WEBHOOK_BODIES.get(order.dialect, native_webhook)(order, outputs, storage)
