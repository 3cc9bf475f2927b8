"""Canonical order -> seed 000's JSON shapes (status body and webhook payload)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from easel.db.tables import Order, Output
from easel.storage import Storage


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def output_urls(order: Order, outputs: list[Output], storage: Storage) -> list[str]:
    if order.status != "completed" or order.outputs_swept:
        return []
    return [storage.url(o.storage_key) for o in sorted(outputs, key=lambda o: o.index)]


def native_status(
    order: Order, outputs: list[Output], storage: Storage, position: int | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ok": True,
        "order_id": order.id,
        "status": order.status,
        "product_type": order.product_type,
        "style": order.model_alias,
        "model": order.model,
        "priority": order.priority,
        "progress": order.progress,
        "step": order.step,
        "total_steps": order.total_steps,
        "prompt": order.prompt,
        "negative_prompt": order.negative_prompt,
        "width": order.width,
        "height": order.height,
        "n": order.n,
        "seed": order.seed,
        "steps": order.steps,
        "guidance": order.guidance,
        "llm_enhance": order.llm_enhance,
        "cost": order.cost_credits,
        "attempts": order.attempts,
        "created_at": iso(order.created_at),
        "started_at": iso(order.started_at),
        "completed_at": iso(order.completed_at),
        "outputs_expire_at": iso(order.outputs_expire_at),
    }
    if order.status == "pending":
        body["queue_position"] = position
    if order.status == "running" and order.cancel_requested:
        body["cancel_requested"] = True
    if order.status == "completed" and order.outputs_swept:
        body["output_urls"] = []
        body["outputs_expired"] = True
        body["message"] = f"the outputs expired at {iso(order.outputs_expire_at)} and were deleted"
    elif order.status == "completed":
        body["output_urls"] = output_urls(order, outputs, storage)
        body["outputs"] = [
            {
                "url": url,
                "seed": o.seed,
                "width": o.width,
                "height": o.height,
                "content_type": o.content_type,
            }
            for url, o in zip(
                body["output_urls"], sorted(outputs, key=lambda o: o.index), strict=True
            )
        ]
    if order.status in ("failed", "canceled"):
        body["error"] = {"code": order.error_code, "message": order.error_message}
    return body


def native_webhook(order: Order, outputs: list[Output], storage: Storage) -> dict[str, Any]:
    """Seed 000's webhook body, plus the error when the order did not complete."""
    payload: dict[str, Any] = {
        "order_id": order.id,
        "status": order.status,
        "output_urls": output_urls(order, outputs, storage),
    }
    if order.status in ("failed", "canceled"):
        payload["error"] = {"code": order.error_code, "message": order.error_message}
    return payload
