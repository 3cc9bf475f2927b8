"""Waiting for an order to finish, for APIs that answer synchronously (OpenAI Images).

The wait follows the process's change feed (orders/changes.py): it holds no database connection
and reads nothing itself while it waits.
"""

from __future__ import annotations

import time

from easel.orders.changes import Snapshot, Watch, is_final


async def wait_until_final(watch: Watch, timeout: float) -> Snapshot | None:
    """The order's final snapshot (`order` None: it no longer exists), or None when `timeout`
    seconds pass first or the process is stopping (`watch.closing`)."""
    deadline = time.monotonic() + timeout
    while True:
        snapshot = watch.snapshot
        if is_final(snapshot):
            return snapshot
        left = deadline - time.monotonic()
        if watch.closing or left <= 0:
            return None
        await watch.changed(left)
