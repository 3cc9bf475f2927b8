"""The reaper: orders whose worker stopped renewing its lease go back to the queue, or fail
(refunded) after their last attempt."""

from __future__ import annotations

import logging

from easel.clock import utcnow
from easel.config import Settings
from easel.db.engine import Database
from easel.orders import lifecycle, queue
from easel.services.base import Periodic

log = logging.getLogger(__name__)

REAP_BATCH = 100  # orders one pass handles at most


async def reap(db: Database, max_attempts: int) -> int:
    """Expired leases back to the queue (or failed), one order per transaction."""
    reaped = 0
    while reaped < REAP_BATCH:
        async with db.transaction() as session:
            expired = await queue.expired_leases(session, utcnow(), limit=1)
            if not expired:
                return reaped
            outcome = await lifecycle.requeue_or_fail(session, expired[0], max_attempts, utcnow())
            await queue.notify_new_order(session)
        reaped += 1
        log.warning("lease expired", extra={"action": outcome, "order_id": expired[0].id})
    return reaped


def reaper(settings: Settings, db: Database) -> Periodic:
    return Periodic("reaper", settings.reaper_interval, lambda: reap(db, settings.max_attempts))
