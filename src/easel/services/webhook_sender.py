"""The webhook sender service: due outbox rows as signed POSTs to the checked address, many at
once, with each endpoint's trouble kept to that endpoint.

One sender process keeps up to EASEL_WEBHOOK_MAX_IN_FLIGHT deliveries in flight and at most
EASEL_WEBHOOK_MAX_PER_ENDPOINT to one endpoint (counted over every sender sharing the database:
webhooks/claim.py). A receiver that hangs holds its own endpoint's slots until the attempt's
timeouts end it, never anyone else's. Each pass records the results that came back and claims
more in one transaction, then renders the claimed bodies in one read.

A pass takes milliseconds of CPU, and a slot freed during one waits for the next. So the sender
also leases up to EASEL_WEBHOOK_CLAIM_AHEAD more deliveries of each endpoint it is sending to
(reserved: no slot taken, webhooks/claim.py), rendered with the rest: a delivery that ends 2xx
hands its slot straight to the next of its endpoint's reserved deliveries, and the next pass
writes the hand-over with its result; until then the slot is counted under the earlier delivery's
lease, so it is handed on only while that lease, too, outlasts a whole attempt. A failure, a stop,
or a lease too short for a whole attempt gives the endpoint's reserved deliveries back instead,
and the next pass claims them again in their order.

Each body is rendered by the order's dialect when it is sent, so a delivery retried hours later
carries output URLs valid for the full EASEL_URL_TTL_SECONDS from that moment. At least once: a
claimed delivery is leased, and a sender that dies mid-way leaves it to be sent again when the
lease runs out, with the same `webhook-id`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

import certifi
import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from easel import metrics
from easel.clock import utcnow
from easel.config import Settings
from easel.db.engine import Database
from easel.db.tables import Order, Output
from easel.dialects.registry import dialect_of
from easel.net.pinned import send_checked
from easel.net.policy import url_policy
from easel.orders import lifecycle
from easel.services.base import wait_any
from easel.storage import Storage
from easel.webhooks import claim, outbox, signing

log = logging.getLogger(__name__)

USER_AGENT = "easel-webhooks/1"
# Passes that may fail to record the last results after stop before the sender gives up on them.
STOP_RECORD_TRIES = 3

Clock = Callable[[], datetime]


class Rendered(Protocol):
    """What rendering needs of a delivery (a claimed one, or a WebhookDelivery row)."""

    @property
    def order_id(self) -> str: ...
    @property
    def event(self) -> str: ...


R = TypeVar("R", bound=Rendered)

retry_delay = claim.retry_delay  # kept importable from here


def client_for(
    settings: Settings, connections: int | None = None, tls: ssl.SSLContext | None = None
) -> httpx.AsyncClient:
    """A connection pool for webhooks: no environment proxies (the checked address is the one
    connected to); `connections` (default EASEL_WEBHOOK_MAX_IN_FLIGHT) kept at most; `tls`: a
    verifying context to share (loading the CA bundle costs tens of milliseconds)."""
    size = connections or settings.webhook_max_in_flight
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
        trust_env=False,
        verify=tls or True,
    )


class Pools:
    """A small connection pool per endpoint, so one endpoint's connections (a hanging receiver's
    among them) never take another's, and a pool's bookkeeping stays small. Pools of endpoints
    not sent to lately are closed beyond MAX_POOLS."""

    MAX_POOLS = 256

    def __init__(self, settings: Settings, shared: httpx.AsyncClient | None = None) -> None:
        """`shared`: use that one client for every endpoint (the caller closes it)."""
        self.settings, self.shared = settings, shared
        self.pools: OrderedDict[str, httpx.AsyncClient] = OrderedDict()
        self.using: Counter[str] = Counter()
        self.tls: ssl.SSLContext | None = None

    @asynccontextmanager
    async def client(self, endpoint: str) -> AsyncIterator[httpx.AsyncClient]:
        if self.shared is not None:
            yield self.shared
            return
        pool = self.pools.get(endpoint)
        if pool is None:
            if self.tls is None:
                self.tls = ssl.create_default_context(cafile=certifi.where())
            pool = self.pools[endpoint] = client_for(
                self.settings, self.settings.webhook_max_per_endpoint, self.tls
            )
        self.pools.move_to_end(endpoint)
        self.using[endpoint] += 1
        try:
            yield pool
        finally:
            self.using[endpoint] -= 1
            if not self.using[endpoint]:
                del self.using[endpoint]
            await self._trim()

    async def _trim(self) -> None:
        for endpoint in list(self.pools)[: max(len(self.pools) - self.MAX_POOLS, 0)]:
            if endpoint not in self.using:
                await self.pools.pop(endpoint).aclose()

    async def aclose(self) -> None:
        while self.pools:
            await self.pools.popitem()[1].aclose()


def attempt_timeout(settings: Settings) -> httpx.Timeout:
    return httpx.Timeout(
        settings.webhook_timeout,
        connect=settings.webhook_connect_timeout,
        read=settings.webhook_first_byte_timeout,
        write=settings.webhook_first_byte_timeout,
    )


@dataclass(frozen=True)
class Answer:
    status: int
    excerpt: str  # the start of the body (at most EASEL_WEBHOOK_MAX_RESPONSE_BYTES read)


async def post_signed(
    client: httpx.AsyncClient, settings: Settings, url: str, body: bytes, headers: dict[str, str]
) -> Answer:
    """POST `body`, following redirects that pass the same address check, within the attempt's
    timeouts; reads at most EASEL_WEBHOOK_MAX_RESPONSE_BYTES of the final answer."""
    async with asyncio.timeout(settings.webhook_timeout):
        response = await send_checked(
            client,
            "POST",
            url,
            "webhook_url",
            url_policy(settings),
            max_redirects=settings.webhook_max_redirects,
            headers=headers | {"user-agent": USER_AGENT},
            content=body,
            timeout=attempt_timeout(settings),
        )
        try:
            read = bytearray()
            async for chunk in response.aiter_raw():
                read += chunk
                if len(read) >= settings.webhook_max_response_bytes:
                    break
        finally:
            await response.aclose()
    text = bytes(read[: settings.webhook_max_response_bytes]).decode("utf-8", "replace")
    return Answer(response.status_code, text)


def describe(exc: BaseException, settings: Settings) -> str:
    """A failed attempt in words a receiver's owner can act on."""
    if isinstance(exc, TimeoutError):
        return f"no complete answer within {settings.webhook_timeout:g} s (EASEL_WEBHOOK_TIMEOUT)"
    if isinstance(exc, httpx.ConnectTimeout):
        return (
            f"could not connect within {settings.webhook_connect_timeout:g} s "
            "(EASEL_WEBHOOK_CONNECT_TIMEOUT)"
        )
    if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
        return (
            f"no answer within {settings.webhook_first_byte_timeout:g} s of sending "
            "(EASEL_WEBHOOK_FIRST_BYTE_TIMEOUT)"
        )
    return f"{type(exc).__name__}: {exc}"[:1000]


def as_of(order: Order, event: str) -> Order:
    """The order as the event saw it: a later status (a `started` event sent after the order
    ended) is not shown early. A detached copy; the session's row is untouched."""
    status = outbox.status_of(event)
    if order.status == status:
        return order
    columns = {c.key: getattr(order, c.key) for c in Order.__mapper__.column_attrs}
    return Order(**columns | {"status": status, "completed_at": None, "progress": 0, "step": 0})


def render_one(
    row: Rendered, order: Order | None, outputs: list[Output], storage: Storage
) -> bytes:
    """The delivery's body in its order's dialect, with URLs signed now."""
    if order is None:
        body = {"order_id": row.order_id, "status": "deleted"}
    else:
        seen = as_of(order, row.event)
        body = dialect_of(order.dialect).callback_body(
            seen, outputs if seen is order else [], storage
        )
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


async def render(session: AsyncSession, row: Rendered, storage: Storage) -> bytes:
    """One delivery's body (see `render_all` for a batch)."""
    [(_, result)] = await render_all(session, [row], storage)
    if isinstance(result, BaseException):
        raise result
    return result


async def render_all(
    session: AsyncSession, rows: Sequence[R], storage: Storage
) -> list[tuple[R, bytes | Exception]]:
    """Each delivery's body, or the error that rendering it raised (its own failure only)."""
    if not rows:
        return []
    order_ids = {row.order_id for row in rows}
    orders = {o.id: o for o in await session.scalars(select(Order).where(Order.id.in_(order_ids)))}
    outputs: dict[str, list[Output]] = {}
    for out in await session.scalars(
        select(Output)
        .where(Output.order_id.in_(order_ids), lifecycle.shown())
        .order_by(Output.index)
    ):
        outputs.setdefault(out.order_id, []).append(out)
    rendered: list[tuple[R, bytes | Exception]] = []
    for row in rows:
        try:
            body: bytes | Exception = render_one(
                row, orders.get(row.order_id), outputs.get(row.order_id, []), storage
            )
        except Exception as exc:  # counted as a failed attempt of this row alone
            log.exception("webhook body failed", extra={"action": "webhook_render_error"})
            body = exc
        rendered.append((row, body))
    return rendered


@dataclass(frozen=True)
class Claimed:
    delivery: claim.Due
    body: bytes | Exception


async def claim_and_render(
    db: Database,
    settings: Settings,
    storage: Storage,
    results: Sequence[claim.Attempt],
    room: int,
    now: datetime,
    *,
    release: bool = False,
    unreserve: Sequence[claim.Due] = (),
    ahead: Callable[[list[claim.Due]], set[str]] | None = None,
) -> list[Claimed]:
    """Record `results`, give back the reserved deliveries `unreserve`, claim up to `room` due
    deliveries (and, with `ahead`, reserved ones for the endpoints it names given those claimed)
    and render their bodies, in one transaction."""
    async with db.transaction() as session:
        if release:
            await claim.release_expired(session, now)
        recorded = await claim.record(session, settings, results, now, unreserve)
        due = await claim.claim_due(session, settings, room, now)
        if ahead is not None:
            due += await claim.claim_ahead(session, settings, ahead(due), now)
        jobs = [Claimed(row, body) for row, body in await render_all(session, due, storage)]
    for done in recorded:
        seen(done)
    return jobs


def seen(done: claim.Recorded) -> None:
    """Metrics and a log line for one recorded attempt."""
    metrics.count_webhook_attempt(done.state)
    metrics.webhook_endpoint_attempt(done.account_id, done.origin, done.state, done.latency)
    log.info(
        "webhook attempt",
        extra={
            "action": "webhook",
            "order_id": done.order_id,
            "delivery_id": done.delivery_id,
            "endpoint": done.origin,
            "status": done.status,
            "error": done.error,
            "duration_ms": done.duration_ms,
            "state": done.state,
        },
    )
    if done.disabled_reason:
        log.warning(
            "webhook endpoint disabled",
            extra={
                "action": "webhook_endpoint_disabled",
                "account_id": done.account_id,
                "endpoint": done.origin,
                "reason": done.disabled_reason,
            },
        )


async def attempt(pools: Pools, settings: Settings, job: Claimed, clock: Clock) -> claim.Attempt:
    """Send one claimed delivery once; never raises."""
    row = job.delivery
    started, t0 = clock(), time.monotonic()
    status: int | None = None
    fault = True
    if isinstance(job.body, Exception):
        error: str | None = f"rendering the body failed: {job.body!r}"[:1000]
        fault = False
    else:
        headers = signing.headers(row.secret, row.id, int(time.time()), job.body)
        try:
            async with pools.client(row.endpoint_id) as client:
                answer = await post_signed(client, settings, row.url, job.body, headers)
            status = answer.status
            error = None
            if not 200 <= status < 300:
                excerpt = " ".join(answer.excerpt.split())[:200]
                error = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
        except Exception as exc:  # any failure of one delivery must not stop the sender
            error = describe(exc, settings)
    return claim.Attempt(
        delivery_id=row.id,
        endpoint_id=row.endpoint_id,
        lease_until=row.lease_until,
        status=status,
        error=error,
        endpoint_fault=fault,
        started_at=started,
        duration_ms=int((time.monotonic() - t0) * 1000),
    )


async def deliver_due(
    db: Database,
    client: httpx.AsyncClient,
    settings: Settings,
    storage: Storage,
    limit: int | None = None,
    clock: Clock = utcnow,
) -> int:
    """One pass: claim what is due (up to `limit`, default EASEL_WEBHOOK_MAX_IN_FLIGHT), send it
    all concurrently, record the results. How many were attempted."""
    room = settings.webhook_max_in_flight if limit is None else limit
    jobs = await claim_and_render(db, settings, storage, [], room, clock(), release=True)
    pools = Pools(settings, shared=client)
    results = await asyncio.gather(*(attempt(pools, settings, j, clock) for j in jobs))
    if results:
        async with db.transaction() as session:
            recorded = await claim.record(session, settings, results, clock())
        for done in recorded:
            seen(done)
    return len(jobs)


class WebhookSender:
    """Keeps up to EASEL_WEBHOOK_MAX_IN_FLIGHT deliveries going; looks for more whenever one
    ends, and every EASEL_WEBHOOK_POLL_INTERVAL when none are due. On stop, the deliveries in
    flight finish (each within its timeouts) and are recorded, and reserved ones are given back."""

    name = "webhook sender"

    def __init__(
        self, settings: Settings, db: Database, storage: Storage, clock: Clock = utcnow
    ) -> None:
        self.settings, self.db, self.storage, self.clock = settings, db, storage, clock
        self.results: list[claim.Attempt] = []
        self.ended = asyncio.Event()  # a result is waiting to be recorded
        self.sending: Counter[str] = Counter()  # this sender's posts in flight, by endpoint
        self.reserved: dict[str, deque[Claimed]] = {}  # by endpoint, earliest due first
        self.give_back: list[claim.Due] = []  # reserved deliveries to unreserve next pass
        self.failed: set[str] = set()  # endpoints with a failed post since the pass started
        # Results appended to self.results so far, and how many of them (the oldest) a pass has
        # recorded: a handed-on slot is counted in the database under the lease of its chain's
        # earliest delivery whose result is not recorded yet.
        self.appended = self.recorded = 0
        # A reserved delivery is sent only with this much of its lease left: its whole attempt
        # and the margin to record it.
        self.lease_needed = timedelta(
            seconds=settings.webhook_timeout + settings.webhook_lease_margin
        )

    def drop_reserved(self, endpoint: str) -> None:
        self.give_back += [job.delivery for job in self.reserved.pop(endpoint, ())]

    def next_reserved(self, endpoint: str, booked_until: datetime) -> Claimed | None:
        """The endpoint's next reserved delivery, if both its lease and the lease the slot is
        counted under in the database (`booked_until`) are long enough for an attempt. If not,
        none is sent: the endpoint's reserved deliveries are all given back (those reserved
        later have later leases, and sending one would pass the earlier one), and the next pass
        claims them again in their order."""
        queue = self.reserved.get(endpoint)
        if not queue:
            return None
        now = self.clock()
        lease_left = min(queue[0].delivery.lease_until, booked_until) - now
        if lease_left < self.lease_needed:
            self.drop_reserved(endpoint)
            return None
        return queue.popleft()

    def wants_ahead(self, claimed: list[claim.Due]) -> set[str]:
        """Endpoints to claim ahead for: those this sender is sending to (or just claimed for)
        with fewer than EASEL_WEBHOOK_CLAIM_AHEAD deliveries reserved."""
        endpoints = {e for e, n in self.sending.items() if n} | {d.endpoint_id for d in claimed}
        ahead = self.settings.webhook_claim_ahead
        return {e for e in endpoints - self.failed if len(self.reserved.get(e, ())) < ahead}

    def take(self, jobs: list[Claimed]) -> list[Claimed]:
        """A pass's claimed deliveries: those to send now (returned); reserved ones queued, or
        given back where a post to their endpoint failed since the pass started (the database
        did not know it when they were claimed ahead)."""
        start = []
        for job in jobs:
            endpoint = job.delivery.endpoint_id
            if not job.delivery.reserved:
                start.append(job)
            elif endpoint in self.failed:
                self.give_back.append(job.delivery)
            else:
                self.reserved.setdefault(endpoint, deque()).append(job)
        return start

    async def send(self, job: Claimed, pools: Pools, stop: asyncio.Event) -> None:
        """Send on one slot of the job's endpoint: the job, then, while each ends 2xx, the
        endpoint's reserved deliveries (the slot handed from one to the next)."""
        endpoint = job.delivery.endpoint_id  # counted in self.sending by the caller
        # This chain's results not recorded yet: (number in self.results' order, the lease the
        # slot is counted under in the database until that result is recorded).
        unrecorded: deque[tuple[int, datetime]] = deque()
        try:
            while True:
                result = await attempt(pools, self.settings, job, self.clock)
                following = None
                if result.error is not None:
                    self.failed.add(endpoint)
                    self.drop_reserved(endpoint)  # the next pass decides what is sent there
                elif not stop.is_set():
                    unrecorded.append((self.appended, job.delivery.lease_until))
                    while unrecorded[0][0] < self.recorded:
                        unrecorded.popleft()
                    following = self.next_reserved(endpoint, unrecorded[0][1])
                if following is not None:
                    result = replace(result, handed_to=following.delivery)
                self.results.append(result)
                self.appended += 1
                self.ended.set()
                if following is None:
                    return
                job = following
        finally:
            self.sending[endpoint] -= 1
            if not self.sending[endpoint]:
                del self.sending[endpoint]

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        in_flight: set[asyncio.Task[None]] = set()
        release_every = max(settings.webhook_poll_interval, 1.0)
        released_at = 0.0
        pools = Pools(settings)
        failed_while_stopping = 0
        try:
            while not stop.is_set() or in_flight or self.results or self.reserved or self.give_back:
                if stop.is_set():
                    for endpoint in list(self.reserved):
                        self.drop_reserved(endpoint)
                room = 0 if stop.is_set() else settings.webhook_max_in_flight - len(in_flight)
                release = time.monotonic() - released_at >= release_every
                self.failed.clear()
                results, self.results = self.results, []
                give_back, self.give_back = self.give_back, []
                self.ended.clear()
                try:
                    jobs = await claim_and_render(
                        self.db,
                        settings,
                        self.storage,
                        results,
                        room,
                        self.clock(),
                        release=release,
                        unreserve=give_back,
                        ahead=None if stop.is_set() else self.wants_ahead,
                    )
                    self.recorded += len(results)
                    if release:
                        released_at = time.monotonic()
                except Exception:
                    log.exception("webhook pass failed", extra={"action": "webhook_error"})
                    jobs = []
                    self.results[:0], self.give_back[:0] = results, give_back
                    if stop.is_set():
                        failed_while_stopping += 1
                        if failed_while_stopping >= STOP_RECORD_TRIES and not in_flight:
                            # Their leases run out and they are sent again, same webhook-id.
                            log.error(
                                "stopping with %d results unrecorded",
                                len(self.results),
                                extra={"action": "webhook_unrecorded"},
                            )
                            return
                        await asyncio.sleep(settings.webhook_poll_interval)
                    else:
                        await wait_any(stop, timeout=settings.webhook_poll_interval)
                started = self.take(jobs)
                for job in started:
                    self.sending[job.delivery.endpoint_id] += 1
                    task = asyncio.create_task(self.send(job, pools, stop))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                # Reserved deliveries of an endpoint this sender no longer sends to (its last
                # post ended during the pass) are given back by the next pass, before it claims.
                for endpoint in [e for e in self.reserved if not self.sending.get(e)]:
                    self.drop_reserved(endpoint)
                if self.results or self.give_back:
                    continue
                if not in_flight:
                    await wait_any(stop, timeout=settings.webhook_poll_interval)
                    continue
                # Wait for a delivery to end (then record it and claim again); when the last
                # claim found nothing more, also look again after the poll interval. No pause to
                # gather more ends: those that end during a pass are recorded by the next one.
                if room > len(started):
                    await wait_any(self.ended, timeout=settings.webhook_poll_interval)
                else:
                    await self.ended.wait()
        finally:
            await pools.aclose()
