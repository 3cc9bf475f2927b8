"""The worker loop: claim a batch, run it on a backend, store, finish each order.

Side tasks: listener, reaper, retention sweeper, webhook sender, presence heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.exc import DBAPIError

from easel.backends.base import Backend, Canceled, GeneratedImage, ProgressFn
from easel.backends.loading import pick_device
from easel.catalog import Catalog, Model
from easel.clock import utcnow
from easel.config import Settings
from easel.db.engine import Database
from easel.db.tables import Order
from easel.errors import ModelUnavailable
from easel.orders import lifecycle, queue
from easel.orders.retention import sweep_expired
from easel.storage import MissingObject, Storage
from easel.webhooks.sender import deliver_due
from easel.worker import presence
from easel.worker.batch import BatchRun, build_job, run_splitting
from easel.worker.models import ModelCache

log = logging.getLogger(__name__)

REAP_BATCH = 100
EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "video/mp4": "mp4",
}
RECENT_BATCHES = 100  # claimed batches remembered for inspection (`Worker.recent_batches`)


class Worker:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        db: Database,
        storage: Storage,
        *,
        models: Sequence[str] | None = None,
        preload: bool = False,
    ) -> None:
        """`models`: catalog ids this worker claims (None: all); `preload`: load them first."""
        self.settings = settings
        self.catalog = catalog
        self.db = db
        self.storage = storage
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.served = None if models is None else list(models)
        self.preload = preload
        device = pick_device(settings.device)
        budget = int(settings.model_memory_gb * 2**30)
        self.models = ModelCache(device, settings.max_loaded_models, budget, settings)
        self.presence = presence.Presence(
            worker_id=self.worker_id,
            host=socket.gethostname(),
            device=presence.describe_device(device),
            served_models=self.served,
            started_at=utcnow(),
        )
        self.wake = asyncio.Event()
        self.deliveries_due = asyncio.Event()
        self.processed = 0
        self.recent_batches: deque[list[str]] = deque(maxlen=RECENT_BATCHES)  # order ids
        self._reported: list[str] | None = None  # loaded models as last reported

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set; the batch in hand is finished first."""
        side = [
            self._periodic(stop, self.settings.reaper_interval, self.reap, "reaper"),
            self._periodic(stop, self.settings.sweep_interval, self.sweep, "retention sweeper"),
            self._periodic(
                stop, self.settings.worker_heartbeat_seconds, self.report_presence, "presence"
            ),
            self._watch(self._send_loop(stop), "webhook sender"),
        ]
        if not self.db.is_sqlite:
            dsn = self.db.url.set(drivername="postgresql").render_as_string(hide_password=False)
            side.append(self._watch(queue.listen_for_orders(dsn, self.wake.set, stop), "listener"))
        tasks = [asyncio.create_task(c) for c in side]
        log.info("worker started", extra={"action": "start", "worker_id": self.worker_id})
        try:
            if self.preload:
                await self._preload(stop)
            while not stop.is_set():
                for task in tasks:
                    if task.done():
                        task.result()  # a dead side task stops the worker
                self.wake.clear()
                try:
                    orders = await self.claim()
                except (DBAPIError, OSError):
                    log.exception("claim failed; retrying", extra={"action": "claim_error"})
                    await _wait_any(stop, timeout=self.settings.poll_interval)
                    continue
                if orders:
                    await self.process(orders)
                    continue
                await _wait_any(self.wake, stop, timeout=self.settings.poll_interval)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await self.report_presence(stopped=True)
            except Exception:
                log.exception("could not record the stop", extra={"action": "presence_error"})
            log.info("worker stopped", extra={"action": "stop", "worker_id": self.worker_id})

    async def _preload(self, stop: asyncio.Event) -> None:
        for model_id in self.served or []:
            if stop.is_set():
                return
            await self._backend(self.catalog.models[model_id])

    async def _watch(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("worker side task died", extra={"action": "side_task", "task": name})
            raise

    async def report_presence(self, *, stopped: bool = False) -> None:
        loaded = self.models.loaded
        async with self.db.transaction() as session:
            await presence.report(
                session, self.presence, loaded, self.models.loaded_bytes, utcnow(), stopped=stopped
            )
        self._reported = loaded

    async def claim(self) -> list[Order]:
        """A leader by the claim rule, then compatible followers up to EASEL_MAX_BATCH_IMAGES."""
        prefer = timedelta(seconds=self.settings.prefer_loaded_seconds)
        async with self.db.transaction() as session:
            leader = await queue.claim_next(
                session,
                self.worker_id,
                utcnow(),
                self.lease,
                models=self.served,
                loaded=self.models.loaded,
                prefer_loaded_for=prefer,
            )
            if leader is not None:
                lifecycle.started(session, leader, self.storage, utcnow())
        if leader is None:
            return []
        room = self.settings.max_batch_images - leader.n
        followers: list[Order] = []
        if room > 0:
            try:
                async with self.db.transaction() as session:
                    followers = await queue.claim_followers(
                        session, leader, self.worker_id, utcnow(), self.lease, room
                    )
                    for order in followers:
                        lifecycle.started(session, order, self.storage, utcnow())
            except (DBAPIError, OSError):
                log.exception(
                    "claiming a batch failed; running the order alone",
                    extra={"action": "claim_error", "order_id": leader.id},
                )
                followers = []
        return [leader, *followers]

    async def process(self, orders: list[Order]) -> None:
        """Run one batch; every order ends on its own (completed, failed, canceled or lost)."""
        ids = [o.id for o in orders]
        self.recent_batches.append(ids)
        log.info("orders claimed", extra={"action": "claim", "order_ids": ids})
        batch = BatchRun(orders)
        heartbeat = asyncio.create_task(self._heartbeat(batch))
        try:
            results = await self._generate(batch)
            await self._end_failures(batch)
            for order in orders:
                if batch.is_live(order.id):
                    await self._deliver(batch, order, results)
        except Canceled:
            # Raised by progress once every order has dropped out (each was ended then), or by
            # a backend that saw the work canceled at its end.
            for order_id in batch.live:
                batch.drop(order_id)
                await self._end(order_id, "canceled", "canceled by the client", status="canceled")
        except ModelUnavailable as exc:
            for order_id in batch.live:
                batch.fail(order_id, exc.code, exc.message)
        except Exception as exc:
            log.exception("generation failed", extra={"action": "fail", "order_ids": ids})
            for order_id in batch.live:
                batch.fail(
                    order_id,
                    "generation_failed",
                    f"generation failed ({type(exc).__name__}); the order was refunded and the "
                    f"worker log has the details (order {order_id})",
                )
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self._end_failures(batch)
            self.processed += len(orders)
            self.deliveries_due.set()

    async def _deliver(
        self, batch: BatchRun, order: Order, results: dict[tuple[str, int], GeneratedImage]
    ) -> None:
        """Store one order's images and complete it in its own transaction."""
        images = [results.get((order.id, i)) for i in range(order.n)]
        if any(image is None for image in images):
            batch.fail(
                order.id,
                "generation_failed",
                "the model returned fewer outputs than asked for; the order was refunded",
            )
            await self._end_failures(batch)
            return
        try:
            keys = await asyncio.to_thread(self._store, order.id, [i for i in images if i])
            batch.drop(order.id)  # settled: the heartbeat stops renewing it
            async with self.db.transaction() as session:
                done = await lifecycle.complete(
                    session, order.id, self.worker_id, keys, self.storage, utcnow()
                )
        except Exception as exc:
            log.exception("saving failed", extra={"action": "fail", "order_id": order.id})
            batch.drop(order.id)
            await self._end(
                order.id,
                "generation_failed",
                f"saving the outputs failed ({type(exc).__name__}); the order was refunded and "
                f"the worker log has the details (order {order.id})",
            )
            return
        if done is None:
            log.warning(
                "lease lost; leaving the order", extra={"action": "lost", "order_id": order.id}
            )
        else:
            log.info("order completed", extra={"action": "complete", "order_id": order.id})

    async def _end_failures(self, batch: BatchRun) -> None:
        for order_id, (code, message) in batch.take_failures().items():
            await self._end(order_id, code, message)

    async def _end(self, order_id: str, code: str, message: str, status: str = "failed") -> None:
        """Fail (or cancel) and refund; a database error leaves it to the reaper."""
        try:
            async with self.db.transaction() as session:
                await lifecycle.fail(
                    session,
                    order_id,
                    self.worker_id,
                    code,
                    message,
                    self.storage,
                    utcnow(),
                    status=status,
                )
        except (DBAPIError, OSError):
            log.exception(
                "could not end the order; its lease will expire",
                extra={"action": "end_error", "order_id": order_id},
            )

    async def _backend(self, model: Model) -> Backend:
        backend = await asyncio.to_thread(self.models.get, model)
        if self.models.loaded != self._reported:
            try:
                await self.report_presence()
            except (DBAPIError, OSError):
                log.exception("could not report loaded models", extra={"action": "presence_error"})
        return backend

    async def _references(self, batch: BatchRun) -> dict[str, bytes]:
        """Each order's reference image from storage; an order whose image is gone fails."""
        found: dict[str, bytes] = {}
        for order in batch.orders:
            key = order.reference_key
            if key is None:
                continue
            try:
                found[order.id] = await asyncio.to_thread(self.storage.get, key)
            except MissingObject:
                batch.fail(
                    order.id,
                    "reference_missing",
                    "the order's reference image is no longer stored; submit the order again",
                )
            except Exception as exc:
                log.exception(
                    "reference unreadable", extra={"action": "fail", "order_id": order.id}
                )
                batch.fail(
                    order.id,
                    "reference_unavailable",
                    f"the order's reference image could not be read ({type(exc).__name__}); "
                    "the order was refunded",
                )
        return found

    async def _generate(self, batch: BatchRun) -> dict[tuple[str, int], GeneratedImage]:
        leader = batch.orders[0]
        model = self.catalog.models.get(leader.model)
        if model is None:
            raise ModelUnavailable(f"model {leader.model!r} is no longer in this worker's catalog")
        backend = await self._backend(model)
        references = await self._references(batch)
        orders = [o for o in batch.orders if batch.is_live(o.id)]
        if not orders:
            return {}
        job = build_job(model, orders, references)
        progress = self._progress(batch, asyncio.get_running_loop())
        return await asyncio.to_thread(run_splitting, backend, job, progress, batch)

    def _progress(self, batch: BatchRun, loop: asyncio.AbstractEventLoop) -> ProgressFn:
        """Called in the generation thread after each step: records progress (at most every
        EASEL_PROGRESS_INTERVAL) and raises Canceled once no order of the batch is left."""
        last = 0.0

        def progress(step: int, total: int) -> None:
            nonlocal last
            if not batch.live:
                raise Canceled(batch.orders[0].id)
            now = time.monotonic()
            if step < total and now - last < self.settings.progress_interval:
                return
            last = now
            percent = min(99, step * 100 // max(total, 1))
            report = self._renew(batch, step=step, total_steps=total, progress=percent)
            future = asyncio.run_coroutine_threadsafe(report, loop)
            try:
                future.result(timeout=self.settings.lease_seconds)
            except (DBAPIError, OSError):
                log.exception("progress report failed", extra={"action": "heartbeat_error"})
            if not batch.live:
                raise Canceled(batch.orders[0].id)

        return progress

    async def _renew(self, batch: BatchRun, **progress: Any) -> None:
        """Renew the leases of the batch's live orders; end those the client canceled, drop
        those another worker or the reaper took back."""
        live = batch.live
        async with self.db.transaction() as session:
            held = await queue.renew_leases(
                session, live, self.worker_id, utcnow(), self.lease, **progress
            )
        for order_id in live:
            if order_id not in held:
                if batch.is_live(order_id):
                    batch.drop(order_id)
                    log.warning(
                        "lease lost; leaving the order",
                        extra={"action": "lost", "order_id": order_id},
                    )
            elif held[order_id] and batch.is_live(order_id):
                batch.drop(order_id)
                await self._end(order_id, "canceled", "canceled by the client", status="canceled")

    async def _heartbeat(self, batch: BatchRun) -> None:
        """Renew every third of the lease; a failed renewal is retried at the next beat."""
        while batch.live:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            try:
                await self._renew(batch)
            except (DBAPIError, OSError):
                log.exception("lease renewal failed", extra={"action": "heartbeat_error"})

    def _store(self, order_id: str, images: list[GeneratedImage]) -> list[lifecycle.NewOutput]:
        outputs = []
        for index, image in enumerate(images):
            key = f"{order_id}/{index}.{EXTENSIONS[image.content_type]}"
            stored = self.storage.put(key, image.data, image.content_type)
            outputs.append(
                lifecycle.NewOutput(
                    index=index,
                    storage_key=key,
                    content_type=image.content_type,
                    seed=image.seed,
                    width=image.width,
                    height=image.height,
                    bytes=stored.size,
                )
            )
        return outputs

    async def _periodic(
        self, stop: asyncio.Event, interval: float, step: Callable[[], Awaitable[object]], name: str
    ) -> None:
        """Run `step` every `interval` seconds; a failed pass is logged and tried again later."""
        while not stop.is_set():
            try:
                await step()
            except Exception:
                log.exception("periodic task failed", extra={"action": "side_task", "task": name})
            await _wait_any(stop, timeout=interval)

    async def reap(self) -> int:
        """Expired leases back to the queue (or failed), one order per transaction."""
        reaped = 0
        while reaped < REAP_BATCH:
            async with self.db.transaction() as session:
                expired = await queue.expired_leases(session, utcnow(), limit=1)
                if not expired:
                    return reaped
                outcome = await lifecycle.requeue_or_fail(
                    session, expired[0], self.settings.max_attempts, self.storage, utcnow()
                )
                await queue.notify_new_order(session)
            reaped += 1
            log.warning("lease expired", extra={"action": outcome, "order_id": expired[0].id})
        return reaped

    async def sweep(self) -> int:
        return await sweep_expired(self.db, self.storage, utcnow())

    async def _send_loop(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                self.deliveries_due.clear()
                try:
                    sent = await deliver_due(self.db, client, self.settings)
                except Exception:
                    log.exception("webhook pass failed", extra={"action": "webhook_error"})
                    sent = 0
                if not sent:
                    await _wait_any(self.deliveries_due, stop, timeout=1.0)


async def _wait_any(*events: asyncio.Event, timeout: float) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
