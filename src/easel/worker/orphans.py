"""Jobs providers still run for orders that ended while no worker followed them: the reaper
canceled (the client asked) or failed (the last attempt) an order whose worker had stopped or
lost its lease, and the job it had submitted runs on at the provider, billed. A worker that serves
the order's model cancels it there and marks its attempt row `canceled`, once per row (another
worker sweeping at the same time finds it taken)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta

from easel.backends.upstream.backend import UpstreamBackend
from easel.backends.upstream.base import Remote
from easel.clock import utcnow
from easel.db.engine import Database
from easel.orders import attempts

log = logging.getLogger(__name__)

ORPHAN_BATCH = 100  # rows one pass reads per model at most
ENDED = "the order ended while no worker followed this job; canceled at the provider"


async def cancel_orphans(db: Database, backends: Iterable[UpstreamBackend]) -> int:
    """One pass over the remote models this worker serves; jobs canceled. Only rows begun
    within their channels' longest timeout are looked at: an older job would have been canceled
    by Easel's own deadline, had a worker followed it, and the provider has ended it since."""
    canceled = 0
    for backend in backends:
        channels = [c for c in backend.model.channels if not c.is_local and c.usable]
        if not channels:
            continue
        now = utcnow()
        since = now - timedelta(seconds=max(c.timeout_seconds for c in channels))
        async with db.transaction(readonly=True) as session:
            rows = await attempts.orphaned(
                session, backend.model.id, [c.name for c in channels], since, ORPHAN_BATCH
            )
        for row in rows:
            async with db.transaction() as session:
                if not await attempts.abandon(session, row, ENDED, utcnow()):
                    continue  # another worker's
            if row.remote_id and await backend.cancel_orphan(
                row.channel, Remote(row.remote_id, handle=dict(row.handle or {}))
            ):
                canceled += 1
                log.warning(
                    "canceled an orphaned job at the provider",
                    extra={
                        "action": "upstream_orphan",
                        "order_id": row.order_id,
                        "channel": f"{row.model}/{row.channel}",
                    },
                )
    return canceled
