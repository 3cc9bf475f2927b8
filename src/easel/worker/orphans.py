"""Jobs providers still run for orders that ended without them. The reaper canceled (the client
asked) or failed (the last attempt) an order whose worker had stopped or lost its lease, or the
order completed elsewhere after its worker lost the lease mid-try: the job it had submitted runs
on at the provider, billed, and nobody follows it. A worker that serves the order's model cancels
it there where the provider can, and marks its attempt row `canceled`, once per row (another
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
CANCELED = "the order ended while no worker followed this job; canceled at the provider"
LEFT = "the order ended while no worker followed this job; the provider has no cancel call"


async def cancel_orphans(
    db: Database, backends: Iterable[UpstreamBackend], lease: timedelta
) -> int:
    """One pass over the remote models this worker serves; jobs canceled. Only orders that
    ended over a lease ago (a worker still following one has seen that by then), and rows begun
    within their channels' longest timeout: an older job would have been canceled by Easel's
    own deadline had a worker followed it, and the provider has ended it since."""
    canceled = 0
    for backend in backends:
        channels = [c for c in backend.model.channels if not c.is_local and c.usable]
        if not channels:
            continue
        now = utcnow()
        since = now - timedelta(seconds=max(c.timeout_seconds for c in channels))
        async with db.transaction(readonly=True) as session:
            rows = await attempts.orphaned(
                session,
                backend.model.id,
                [c.name for c in channels],
                since,
                now - lease,
                ORPHAN_BATCH,
            )
        for row in rows:
            can = bool(row.remote_id) and backend.can_cancel(row.channel)
            async with db.transaction() as session:
                if not await attempts.abandon(session, row, CANCELED if can else LEFT, utcnow()):
                    continue  # another worker's
            log.warning(
                "an orphaned provider job" + (": canceled" if can else " runs to its end"),
                extra={
                    "action": "upstream_orphan",
                    "order_id": row.order_id,
                    "channel": f"{row.model}/{row.channel}",
                },
            )
            if can:
                assert row.remote_id is not None
                await backend.cancel_orphan(
                    row.channel, Remote(row.remote_id, handle=dict(row.handle or {}))
                )
                canceled += 1
    return canceled
