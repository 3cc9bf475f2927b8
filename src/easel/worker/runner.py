"""The worker loop: claim, run on a backend, store, finish. Side tasks: listener, reaper, sender."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.exc import DBAPIError

from easel.backends.base import Canceled, GeneratedImage, ImageSpec, Job
from easel.backends.loading import pick_device
from easel.catalog import Catalog
from easel.clock import utcnow
from easel.config import Settings
from easel.db.engine import Database
from easel.db.tables import Order
from easel.errors import ModelUnavailable
from easel.orders import lifecycle, queue
from easel.orders.retention import sweep_expired
from easel.storage import Storage
from easel.webhooks.sender import deliver_due
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


class LeaseLost(Exception):
    """Another worker or the reaper took the order back."""


class Worker:
    def __init__(
        self, settings: Settings, catalog: Catalog, db: Database, storage: Storage
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.db = db
        self.storage = storage
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.models = ModelCache(pick_device(settings.device), settings.max_loaded_models)
        self.wake = asyncio.Event()
        self.deliveries_due = asyncio.Event()
        self.processed = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set; the order in hand is finished first."""
        side = [
            self._periodic(stop, self.settings.reaper_interval, self.reap, "reaper"),
            self._periodic(stop, self.settings.sweep_interval, self.sweep, "retention sweeper"),
            self._watch(self._send_loop(stop), "webhook sender"),
        ]
        if not self.db.is_sqlite:
            dsn = self.db.url.set(drivername="postgresql").render_as_string(hide_password=False)
            side.append(self._watch(queue.listen_for_orders(dsn, self.wake.set, stop), "listener"))
        tasks = [asyncio.create_task(c) for c in side]
        log.info("worker started", extra={"action": "start", "worker_id": self.worker_id})
        try:
            while not stop.is_set():
                for task in tasks:
                    if task.done():
                        task.result()  # a dead side task stops the worker
                self.wake.clear()
                try:
                    order = await self.claim()
                except (DBAPIError, OSError):
                    log.exception("claim failed; retrying", extra={"action": "claim_error"})
                    await _wait_any(stop, timeout=self.settings.poll_interval)
                    continue
                if order is not None:
                    await self.process(order)
                    continue
                await _wait_any(self.wake, stop, timeout=self.settings.poll_interval)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("worker stopped", extra={"action": "stop", "worker_id": self.worker_id})

    async def _watch(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("worker side task died", extra={"action": "side_task", "task": name})
            raise

    async def claim(self) -> Order | None:
        async with self.db.transaction() as session:
            return await queue.claim_next(session, self.worker_id, utcnow(), self.lease)

    async def process(self, order: Order) -> None:
        log.info("order claimed", extra={"action": "claim", "order_id": order.id})
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(order.id, lost))
        try:
            images = await self._generate(order, lost)
            keys = await asyncio.to_thread(self._store, order.id, images)
            async with self.db.transaction() as session:
                done = await lifecycle.complete(
                    session, order.id, self.worker_id, keys, self.storage, utcnow()
                )
            if done is None:
                raise LeaseLost(order.id)
            log.info("order completed", extra={"action": "complete", "order_id": order.id})
        except Canceled:
            await self._end(order.id, "canceled", "canceled by the client", status="canceled")
        except LeaseLost:
            log.warning(
                "lease lost; leaving the order", extra={"action": "lost", "order_id": order.id}
            )
        except ModelUnavailable as exc:
            await self._end(order.id, exc.code, exc.message)
        except Exception as exc:
            log.exception("generation failed", extra={"action": "fail", "order_id": order.id})
            await self._end(
                order.id,
                "generation_failed",
                f"generation failed ({type(exc).__name__}); the order was refunded and the "
                f"worker log has the details (order {order.id})",
            )
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            self.processed += 1
            self.deliveries_due.set()

    async def _end(self, order_id: str, code: str, message: str, status: str = "failed") -> None:
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

    async def _generate(self, order: Order, lost: asyncio.Event) -> list[GeneratedImage]:
        model = self.catalog.models.get(order.model)
        if model is None:
            raise ModelUnavailable(f"model {order.model!r} is no longer in this worker's catalog")
        backend = await asyncio.to_thread(self.models.get, model)
        prompt = model.render_prompt(order.prompt)
        job = Job(
            model=model,
            width=order.width,
            height=order.height,
            steps=order.steps,
            guidance=order.guidance,
            images=[
                ImageSpec(order.id, i, prompt, order.negative_prompt, order.seed + i)
                for i in range(order.n)
            ],
            output_format=order.output_format,
            frames=order.frames or 0,
            extra=dict(order.extra or {}),
        )
        loop = asyncio.get_running_loop()
        last = 0.0

        def progress(step: int, total: int) -> None:
            nonlocal last
            if lost.is_set():
                raise LeaseLost(order.id)
            now = time.monotonic()
            if step < total and now - last < self.settings.progress_interval:
                return
            last = now
            report = self._report(order.id, step, total)
            future = asyncio.run_coroutine_threadsafe(report, loop)
            if future.result(timeout=self.settings.lease_seconds):
                raise Canceled(order.id)

        return await asyncio.to_thread(backend.generate, job, progress)

    async def _report(self, order_id: str, step: int, total: int) -> bool:
        """Record progress; True when the client asked to cancel."""
        async with self.db.transaction() as session:
            canceled = await queue.renew_lease(
                session,
                order_id,
                self.worker_id,
                utcnow(),
                self.lease,
                step=step,
                total_steps=total,
                progress=min(99, step * 100 // max(total, 1)),
            )
        if canceled is None:
            raise LeaseLost(order_id)
        return canceled

    async def _heartbeat(self, order_id: str, lost: asyncio.Event) -> None:
        """Renew the lease every third of it; a failed renewal is retried, a lost lease ends it."""
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            try:
                async with self.db.transaction() as session:
                    held = await queue.renew_lease(
                        session, order_id, self.worker_id, utcnow(), self.lease
                    )
            except (DBAPIError, OSError):
                log.exception("lease renewal failed", extra={"action": "heartbeat_error"})
                continue
            if held is None:
                lost.set()
                return

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
