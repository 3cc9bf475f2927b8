"""An order's canonical status; each dialect shows it its own way."""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    """pending -> running -> completed | failed; pending / running -> canceled."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


FINAL = frozenset({OrderStatus.COMPLETED, OrderStatus.FAILED, OrderStatus.CANCELED})
# Ended without outputs: the error code and message say why, the credits were refunded.
UNSUCCESSFUL = frozenset({OrderStatus.FAILED, OrderStatus.CANCELED})
