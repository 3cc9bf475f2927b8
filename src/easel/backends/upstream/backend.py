"""An upstream model: each order goes to one of its channels, with failover, as an attempt.

For one order: attempts from an earlier run are read first. A job a provider accepted is polled
again by its stored id, never submitted again; a try that was cut off while submitting leaves its
channel out (the provider may have taken it). Then channels are tried in the routing order: a try
writes its attempt row before calling the provider; a refusal (connection refused, DNS, 429, 5xx,
credentials) moves on (a 429 or 5xx first tries the same channel again after its Retry-After); a
job that failed unbilled moves on; any other failure after acceptance is final. A `local` channel
hands the order to that model's queue (`Rerouted`). Outputs are downloaded through the outbound
URL policy and returned as images for the worker to store.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import random
import time
from collections.abc import Mapping
from typing import ClassVar

import httpx

from easel import metrics
from easel.backends.base import (
    Backend,
    BackendFailure,
    Canceled,
    ImageSpec,
    Job,
    LeaseLost,
    ProgressFn,
    Rerouted,
)
from easel.backends.upstream.base import (
    AttemptLog,
    AttemptRecord,
    NotAccepted,
    Provider,
    ProviderHTTP,
    Remote,
    RemoteFailed,
    Request,
    Status,
)
from easel.backends.upstream.http import ChannelHTTP, Clients, TooLarge, sniff
from easel.backends.upstream.registry import PROVIDERS
from easel.backends.upstream.routing import Route, plan
from easel.catalog import Catalog, Channel, Model
from easel.catalog.capabilities import (
    EDIT,
    IMAGE_TO_IMAGE,
    IMAGE_TO_VIDEO,
    INPAINT,
    Need,
    first_capable,
)
from easel.catalog.loader import UPSTREAM
from easel.clock import utcnow
from easel.media.encoding import GeneratedImage
from easel.net.check import UnsafeURL

log = logging.getLogger(__name__)

RESUMABLE = ("accepted", "succeeded")
RUNNING = ("queued", "running")  # a job's states before its end
LEAVES_CHANNEL = ("unbilled", "lost")  # this order never goes to that channel again
# A poll that failed this way is tried again until the channel's timeout: the transport, and
# answers that cannot be read (a provider's or a proxy's error page, a malformed status).
POLL_ERRORS = (
    httpx.HTTPError,
    NotAccepted,
    RemoteFailed,
    TooLarge,
    UnsafeURL,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    TimeoutError,
)


def order_need(spec: ImageSpec, frames: int) -> Need:
    """What an order needs of the model it is handed to, from its inputs (as its dialect asked)."""
    images = 0 if spec.reference is None else 1 + len(spec.more_references)
    if frames:
        return Need((IMAGE_TO_VIDEO,), 1) if images else Need.text(video=True)
    if spec.mask is not None:
        return Need((INPAINT,), images, "mask")
    if images:
        return Need((EDIT, IMAGE_TO_IMAGE), images)
    return Need.text()


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


class UpstreamBackend(Backend):
    family = UPSTREAM
    local: ClassVar[bool] = False

    @classmethod
    def capacity(cls, model: Model) -> int:
        remote = [c for c in model.channels if not c.is_local and c.usable]
        return max(1, sum(c.max_in_flight for c in remote))

    def load(self) -> None:
        assert self.settings is not None, "an upstream backend needs the worker's settings"
        self.rng = random.Random()
        per_client = self.settings.upstream_connections_per_client
        self.clients = Clients(math.ceil(self.capacity(self.model) / max(1, per_client)))
        self.routes = {c.name: Route.of(c) for c in self.model.channels}
        self._providers: dict[str, Provider] = {}
        self.attempts: AttemptLog | None = None  # the worker's (worker/attempt_log.py)
        self.catalog: Catalog | None = None  # the worker's: the local channels' models

    async def aclose(self) -> None:
        """Close the connections (the worker stops)."""
        await self.clients.aclose()

    def _label(self, channel: Channel) -> str:
        return f"{self.model.id}/{channel.name}"

    def first_channel(self, planned: Mapping[str, int]) -> Channel | None:
        """The channel an order's first try would go to now, when that is a remote channel
        whose breaker is closed (no probe to reserve) and that has a free slot beside the tries
        `planned` for it (by channel name) already: the worker's claim writes that try's row
        (`AttemptLog.take_planned`); None: the try writes its own."""
        routes, _ = plan(self.routes.values(), set(), time.monotonic(), self.rng)
        if not routes or routes[0].channel.is_local:
            return None
        route, name = routes[0], routes[0].channel.name
        if route.breaker.tripped:
            return None
        busy = route.in_flight + planned.get(name, 0) >= route.channel.max_in_flight
        if busy or route.slots.locked():
            return None  # it would wait for a slot with its row written
        return route.channel

    def provider(self, channel: Channel) -> Provider:
        found = self._providers.get(channel.name)
        if found is None:
            assert self.settings is not None
            http = ChannelHTTP(self.settings, channel.base_url, self.clients)
            found = PROVIDERS[channel.provider](channel, http, channel.credential or "")
            self._providers[channel.name] = found
        return found

    async def generate(self, job: Job, progress: ProgressFn) -> list[GeneratedImage]:
        images: list[GeneratedImage] = []
        for order_id in job.order_ids:  # upstream batches hold one order; more run in turn
            images += await self._order(job, order_id, progress)
        return images

    async def _order(self, job: Job, order_id: str, progress: ProgressFn) -> list[GeneratedImage]:
        if self.attempts is None:
            raise BackendFailure("upstream_unavailable", "no attempt log; run it on a worker")
        attempts = self.attempts
        specs = [s for s in job.images if s.order_id == order_id]
        req = Request(
            order_id=order_id,
            prompt=specs[0].prompt,
            negative_prompt=specs[0].negative_prompt,
            width=job.width,
            height=job.height,
            n=len(specs),
            seed=specs[0].seed,
            steps=job.steps,
            guidance=job.guidance,
            output_format=job.output_format,
            frames=job.frames,
            reference=specs[0].reference,
        )
        history = await attempts.history(order_id)
        tried = [f"{a.channel} ({_short(a.error or a.state, 120)})" for a in history if a.error]
        skip = {a.channel for a in history if a.state in LEAVES_CHANNEL}
        final = [a for a in history if a.state == "failed"]
        if final:
            raise self._failure(
                "upstream_failed", order_id, f"{final[-1].channel}: {final[-1].error}", len(history)
            )
        for record in history:
            if record.state == "submitting":
                await attempts.finish(
                    record.id,
                    "lost",
                    error="the worker stopped while submitting; the provider may have taken the "
                    "job, so this order does not go to this channel again",
                )
                skip.add(record.channel)
        number = max((a.number for a in history), default=0)  # numbers may have gaps
        open_ = [a for a in history if a.state in RESUMABLE]
        if open_:
            try:
                resumed = await self._resume(open_[-1], req, progress)
            except RemoteFailed as exc:  # its row is written: failed, or unbilled
                tried.append(self._unbilled(exc, open_[-1].channel, order_id, number))
                resumed = None
            if resumed is not None:
                return resumed
            skip.add(open_[-1].channel)
        routes, notes = plan(self.routes.values(), skip, time.monotonic(), self.rng)
        tried += notes
        planned = None if history else attempts.take_planned(order_id)
        first = None
        if planned is not None:
            first = next(
                (r for r in routes if r.channel.name == planned[1] and not r.channel.is_local),
                None,
            )
            if first is None:
                await attempts.discard(planned[0])  # its channel is no longer a route: not sent
                planned = None
            else:
                routes = [first, *(r for r in routes if r is not first)]
        hand_to = self._local_channel(routes, order_need(specs[0], job.frames))
        first_number = number
        for route in routes:
            channel = route.channel
            if number > first_number:  # a try of this run was refused: still this order's?
                await progress(0, 100)
            if channel.is_local:
                if channel is not hand_to:
                    continue
                number += 1
                attempt_id = await attempts.begin(order_id, number, channel, req.n)
                await attempts.finish(attempt_id, "handed_off")
                raise Rerouted(order_id, channel.model)
            for retry in range(channel.retries + 1):
                number += 1
                written = None
                if planned is not None and route is first and retry == 0:
                    written = planned[0]
                try:
                    return await self._try(route, req, number, progress, written)
                except NotAccepted as exc:
                    tried.append(f"{channel.name} ({_short(exc.message, 160)})")
                    wait = exc.retry_after if exc.retry_after is not None else 0.5
                    if not (exc.same_channel and retry < channel.retries):
                        break
                    if wait > channel.max_retry_wait:
                        break
                    if not route.breaker.allows(time.monotonic()):
                        break
                    await asyncio.sleep(wait)
                    await progress(0, 100)  # raises Canceled if the order ended meanwhile
                except RemoteFailed as exc:
                    tried.append(self._unbilled(exc, channel.name, order_id, number))
                    break
        raise self._failure(
            "upstream_unavailable",
            order_id,
            "no route could take the order; tried: "
            + ("; ".join(tried) or "nothing (no channel is usable)"),
            number,
        )

    def _local_channel(self, routes: list[Route], need: Need) -> Channel | None:
        """The local channel whose model can take the order (an edit goes to the edit model, not
        to the first local channel); None when none can."""
        local = [r.channel for r in routes if r.channel.is_local]
        if self.catalog is None:
            return local[0] if local else None
        models = {c.model: c for c in local if c.model in self.catalog.models}
        found = first_capable([self.catalog.models[m] for m in models], need)
        return None if found is None else models[found.id]

    def _unbilled(self, exc: RemoteFailed, channel: str, order_id: str, tries: int) -> str:
        """What `tried` says of a job that failed unbilled (the order goes on); a billed
        failure ends the order (raised)."""
        if exc.billed:
            raise self._failure(
                "upstream_failed",
                order_id,
                f"the provider failed the job ({_short(exc.message, 300)})",
                tries,
            ) from exc
        return f"{channel} ({_short(exc.message, 160)}, not billed)"

    def _failure(self, code: str, order_id: str, detail: str, tries: int) -> BackendFailure:
        """The order's final error. Its message is the client's: it names channels and providers
        only when EASEL_EXPOSE_ROUTE is on; the operator reads every try's error in the attempt
        rows (GET /api/v1/admin/orders/{id}) and in this log line."""
        log.warning(
            "upstream order failed: %s",
            detail,
            extra={"action": "upstream_failed", "order_id": order_id, "model": self.model.id},
        )
        assert self.settings is not None
        if self.settings.expose_route:
            return BackendFailure(code, f"{detail}. The order was refunded")
        if code == "upstream_failed":
            return BackendFailure(code, "the hosted model failed the job; the order was refunded")
        return BackendFailure(
            code,
            f"the hosted model could not take the order ({tries} tries); the order was refunded",
        )

    async def _resume(
        self, record: AttemptRecord, req: Request, progress: ProgressFn
    ) -> list[GeneratedImage] | None:
        """Poll a job an earlier run left; None when it cannot be (the channel is gone, or its
        provider is synchronous)."""
        assert self.attempts is not None
        route = self.routes.get(record.channel)
        if route is None or not PROVIDERS[route.channel.provider].resumable or not record.remote_id:
            await self.attempts.finish(
                record.id, "lost", error="the job cannot be read back from the provider"
            )
            return None
        log.info(
            "resuming an accepted job",
            extra={
                "action": "upstream_resume",
                "order_id": req.order_id,
                "channel": record.channel,
            },
        )
        remote = Remote(record.remote_id, handle=dict(record.handle))
        # The channel's timeout counts from the try's start, not from this resume.
        began = time.monotonic()
        if record.created_at is not None:
            began -= max(0.0, (utcnow() - record.created_at).total_seconds())
        async with route.slots:
            return await self._follow(route, record.id, remote, req, progress, began)

    async def _try(
        self,
        route: Route,
        req: Request,
        number: int,
        progress: ProgressFn,
        written: str | None = None,
    ) -> list[GeneratedImage]:
        """`written`: the id of this try's row when the claim wrote it (else it is begun here)."""
        assert self.attempts is not None
        channel, label = route.channel, self._label(route.channel)
        # The breaker is asked again here, with no await between the question and the probe's
        # reservation: orders planned at the same time must not all be the one probe.
        if not route.breaker.allows(time.monotonic()):
            raise await self._cooling(route, written)
        probe = route.breaker.start(time.monotonic())
        try:
            waited = route.slots.locked()
            async with route.slots:
                if waited:  # time passed: the order may have ended, the channel tripped
                    await self._still_wanted(route, progress, probe, written)
                route.in_flight += 1
                route.peak = max(route.peak, route.in_flight)
                metrics.UPSTREAM_IN_FLIGHT.labels(label).inc()
                attempt_id: str | None = written
                try:
                    if attempt_id is None:
                        attempt_id = await self.attempts.begin(req.order_id, number, channel, req.n)
                    started = time.monotonic()
                    remote = await self._submit(route, attempt_id, req)
                    over = remote.done is not None and remote.done.state not in RUNNING
                    deferred = over and not self.provider(channel).resumable
                    if not await self.attempts.accepted(attempt_id, remote, deferred=deferred):
                        # The order was taken back while this submitted; its next holder has
                        # left this channel, so nobody would follow this job.
                        await self._cancel(self.provider(channel), remote)
                        raise LeaseLost(req.order_id)
                    return await self._follow(route, attempt_id, remote, req, progress, started)
                finally:
                    route.in_flight -= 1
                    metrics.UPSTREAM_IN_FLIGHT.labels(label).dec()
                    if attempt_id is not None:
                        self.attempts.forget(attempt_id)  # after `finish`: nothing left
        finally:
            if probe and route.breaker.probing:
                route.breaker.abandon()  # no success or failure was recorded for it

    async def _still_wanted(
        self, route: Route, progress: ProgressFn, probe: bool, written: str | None
    ) -> None:
        """After waiting for a slot: Canceled when the order ended meanwhile, NotAccepted when
        the channel tripped (this try is not its probe); a planned row is deleted then."""
        try:
            await progress(0, 100)
        except Canceled:
            if written is not None:
                assert self.attempts is not None
                await self.attempts.discard(written)
            raise
        if not probe and route.breaker.tripped:
            raise await self._cooling(route, written)

    async def _cooling(self, route: Route, written: str | None) -> NotAccepted:
        """The refusal of a try at a cooling channel; its planned row, never sent, deleted."""
        if written is not None:
            assert self.attempts is not None
            await self.attempts.discard(written)
        failures = route.breaker.failures
        return NotAccepted(
            f"{route.channel.name}: cooling down after {failures} failures", channel_fault=False
        )

    async def _submit(self, route: Route, attempt_id: str, req: Request) -> Remote:
        assert self.attempts is not None
        channel = route.channel
        try:
            async with asyncio.timeout(channel.timeout_seconds):
                return await self.provider(channel).submit(req)
        except NotAccepted as exc:
            await self._refused(route, attempt_id, exc)
            raise
        except (httpx.ConnectError, httpx.ConnectTimeout, UnsafeURL) as exc:
            refusal = NotAccepted(f"{channel.name}: cannot connect ({type(exc).__name__}: {exc})")
            await self._refused(route, attempt_id, refusal)
            raise refusal from exc
        except (httpx.HTTPError, TooLarge, RemoteFailed, ValueError, TimeoutError) as exc:
            # Sent, and no clear answer: the provider may have taken it. Final for this order.
            message = f"{channel.name}: no clear answer to the submit ({type(exc).__name__}: {exc})"
            await self._failed(route, attempt_id, message, billed=True)
            raise RemoteFailed(message) from exc

    async def _refused(self, route: Route, attempt_id: str, exc: NotAccepted) -> None:
        """`refused`: the channel's fault (counts toward cooling); `rejected`: this request's
        (a 400, 404 or 422), which the admin report's replay of the breaker leaves out too."""
        assert self.attempts is not None
        state = "refused" if exc.channel_fault else "rejected"
        await self.attempts.finish(
            attempt_id, state, error=exc.message, retry_after=exc.retry_after
        )
        self._count(route, state)
        if exc.channel_fault:
            self._fault(route, exc.retry_after)

    async def _failed(self, route: Route, attempt_id: str, message: str, *, billed: bool) -> None:
        assert self.attempts is not None
        cost = route.channel.cost_per_image if billed else 0.0
        await self.attempts.finish(
            attempt_id, "failed" if billed else "unbilled", error=message, cost=cost
        )
        self._count(route, "failed" if billed else "unbilled")
        self._fault(route, None)

    def _fault(self, route: Route, retry_after: float | None) -> None:
        was_cooling = route.breaker.cooling(time.monotonic())
        route.breaker.failure(time.monotonic(), retry_after)
        if route.breaker.cooling(time.monotonic()) and not was_cooling:
            metrics.UPSTREAM_COOLDOWNS.labels(self._label(route.channel)).inc()
            log.warning(
                "channel cooling down",
                extra={
                    "action": "upstream_cool",
                    "channel": self._label(route.channel),
                    "failures": route.breaker.failures,
                },
            )

    def can_cancel(self, channel_name: str) -> bool:
        """The channel is still a route and its provider has a cancel call."""
        route = self.routes.get(channel_name)
        if route is None:
            return False
        kind = PROVIDERS[route.channel.provider]
        return kind.resumable and kind.cancel is not Provider.cancel

    async def cancel_orphan(self, channel_name: str, remote: Remote) -> None:
        """Cancel at the provider a job whose order ended while no worker followed it (the
        worker's orphan sweep, once `can_cancel` said it can)."""
        route = self.routes[channel_name]
        await self._cancel(self.provider(route.channel), remote)
        self._count(route, "canceled")

    async def _cancel(self, provider: Provider, remote: Remote) -> None:
        """Ask the provider to stop the job; a failure (or no answer in time) is logged."""
        assert self.settings is not None
        try:
            async with asyncio.timeout(self.settings.upstream_request_timeout):
                await provider.cancel(remote)
        except Exception:
            log.warning(
                "the provider's cancel call failed", extra={"action": "upstream_cancel_error"}
            )

    def _count(self, route: Route, outcome: str) -> None:
        channel = route.channel
        metrics.UPSTREAM_ATTEMPTS.labels(
            self.model.id, channel.name, channel.provider, outcome
        ).inc()

    async def _follow(
        self,
        route: Route,
        attempt_id: str,
        remote: Remote,
        req: Request,
        progress: ProgressFn,
        started: float,
    ) -> list[GeneratedImage]:
        """Poll until the job ends; cancel it at the provider when the order is canceled."""
        assert self.attempts is not None and self.settings is not None
        settings = self.settings
        channel, provider = route.channel, self.provider(route.channel)
        deadline = started + channel.timeout_seconds
        status = remote.done
        seen: tuple[str, int | None] | None = None
        polls = 0
        try:
            while status is None or status.state in RUNNING:
                if status is not None:
                    await progress(*_progress(status))
                    if (status.remote_status, status.queue_position) != seen:
                        seen = (status.remote_status, status.queue_position)
                        await self.attempts.progress(attempt_id, *seen)
                else:
                    await progress(0, 100)
                if polls and time.monotonic() > deadline:  # a resume polls once first
                    await self._cancel(provider, remote)
                    message = f"{channel.name}: no result within {channel.timeout_seconds:g} s"
                    await self._failed(route, attempt_id, message, billed=True)
                    raise RemoteFailed(message)
                await asyncio.sleep(channel.poll_interval)
                polls += 1
                limit = max(deadline - time.monotonic(), settings.upstream_request_timeout)
                try:
                    async with asyncio.timeout(limit):
                        status = await provider.poll(remote)
                except POLL_ERRORS as exc:
                    log.warning(
                        "polling failed; trying again",
                        extra={
                            "action": "upstream_poll_error",
                            "order_id": req.order_id,
                            "channel": self._label(channel),
                            "error": f"{type(exc).__name__}: {_short(str(exc))}",
                        },
                    )
        except LeaseLost:
            # Taken back: the job and its `accepted` row stay for the worker that holds the
            # order now, which polls it by its id.
            log.warning(
                "lease lost; leaving the provider's job to the order's new holder",
                extra={"action": "upstream_lost", "order_id": req.order_id},
            )
            raise
        except Canceled:
            await self._cancel(provider, remote)
            await self.attempts.finish(attempt_id, "canceled", error="canceled by the client")
            self._count(route, "canceled")
            raise
        except RemoteFailed:
            raise  # its row is written
        except Exception as exc:
            # Easel's own failure (the database): the order fails, so the job is stopped and
            # its row ended where that can still be written.
            await self._cancel(provider, remote)
            try:
                await self.attempts.finish(
                    attempt_id,
                    "failed",
                    error=f"the worker failed while following the job ({type(exc).__name__})",
                    cost=channel.cost_per_image * req.n,
                )
            except Exception:
                log.exception("could not end the attempt", extra={"action": "upstream_error"})
            raise
        if status.state == "failed":
            message = f"{channel.name}: {status.error or 'the job failed'}"
            await self._failed(route, attempt_id, message, billed=status.billed)
            raise RemoteFailed(message, billed=status.billed)
        try:
            images = await self._download(status, req, provider.http)
        except RemoteFailed as exc:
            await self._failed(route, attempt_id, f"{channel.name}: {exc.message}", billed=True)
            raise
        cost = status.cost if status.cost is not None else channel.cost_per_image * req.n
        urls = [o.url for o in status.outputs if o.url]
        await self.attempts.finish(attempt_id, "succeeded", cost=cost, outputs=urls)
        route.breaker.success()
        self._count(route, "succeeded")
        label = self._label(channel)
        metrics.UPSTREAM_DURATION.labels(label).observe(time.monotonic() - started)
        metrics.UPSTREAM_COST.labels(label).inc(cost)
        return images

    async def _download(
        self, status: Status, req: Request, http: ProviderHTTP
    ) -> list[GeneratedImage]:
        """The outputs, each fetched through the channel's HTTP (its own origin is trusted as
        for its API calls; any other passes the outbound URL policy) and checked."""
        if len(status.outputs) < req.n:
            raise RemoteFailed(f"the provider returned {len(status.outputs)} of {req.n} outputs")
        assert self.settings is not None
        settings = self.settings
        images = []
        for index, output in enumerate(status.outputs[: req.n]):
            data = output.data
            if data is None and output.url and output.url.startswith("data:"):
                try:
                    data = base64.b64decode(output.url.split(",", 1)[-1], validate=True)
                except binascii.Error as exc:
                    bad = f"the provider returned a malformed data: URL ({exc})"
                    raise RemoteFailed(bad) from None
            if data is None:
                assert output.url is not None
                try:
                    async with asyncio.timeout(settings.upstream_download_timeout):
                        response = await http.call("GET", output.url, headers={"accept": "*/*"})
                except (httpx.HTTPError, TooLarge, UnsafeURL, TimeoutError) as exc:
                    raise RemoteFailed(
                        f"output {index + 1} could not be downloaded ({type(exc).__name__}: "
                        f"{_short(str(exc))})"
                    ) from exc
                if response.status != 200:
                    raise RemoteFailed(f"output {index + 1}: HTTP {response.status}")
                data = response.body
            if len(data) > settings.upstream_max_output_bytes:
                raise RemoteFailed(f"output {index + 1} is over the size limit")
            images.append(
                await asyncio.to_thread(
                    sniff,
                    data,
                    req.seed + index,
                    req.width,
                    req.height,
                    req.output_format,
                    settings.upstream_max_output_pixels,
                )
            )
        return images


def _progress(status: Status) -> tuple[int, int]:
    """The provider's state as Easel's step of 100: queued 0, running 10 or its own share."""
    if status.state == "queued":
        return 0, 100
    return max(10, min(99, status.progress or 0)), 100
