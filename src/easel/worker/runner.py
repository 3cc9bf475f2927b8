"""The worker loop: claim a batch, run it on a backend, store, finish each order.

Batches for local backends share the device and generate one at a time; once a batch's outputs
are generated the device is free for the next batch while the outputs are screened, stored and
the orders completed (at most EASEL_FINISHING_BATCHES batches finishing so; 0: one batch at a time
from claim to completion). A remote backend may keep up to its `max_in_flight` batches going
while the loop claims more. The loop's only side task is the PostgreSQL wake-up listener;
presence is a service beside it (`Worker.services`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from easel import metrics, wakeup
from easel.accounts import ledger
from easel.accounts.accounts import plans_of
from easel.backends import weights
from easel.backends.base import (
    Backend,
    BackendFailure,
    Canceled,
    LeaseLost,
    ProgressFn,
    Rerouted,
)
from easel.backends.registry import FAMILIES, backend_class
from easel.backends.upstream.backend import UpstreamBackend
from easel.backends.upstream.routing import describe_routes
from easel.catalog import Catalog, Model
from easel.catalog.capabilities import runs_alone
from easel.clock import utcnow
from easel.config import Settings
from easel.db.engine import Database
from easel.db.status import OrderStatus
from easel.db.tables import Order
from easel.enhance.service import SKIPPED, Enhancing, Outcome, make_enhancer
from easel.errors import ModelUnavailable
from easel.media.encoding import GeneratedImage
from easel.orders import attempts, lifecycle, queue
from easel.orders.attempts import AttemptEnd
from easel.orders.inputs import load_inputs
from easel.orders.serving import GENERATING, LOADING_MODEL
from easel.safety.prompts import listed
from easel.services.base import Periodic, Service, wait_any
from easel.storage import MissingObject, Storage
from easel.worker import presence
from easel.worker.attempt_log import DatabaseAttemptLog, PlannedAttempt
from easel.worker.batch import BatchRun, OrderFiles, build_job, run_splitting, with_inputs
from easel.worker.completions import OrderDone
from easel.worker.group_commit import GroupCommit
from easel.worker.loras import resolve_loras
from easel.worker.models import ModelCache
from easel.worker.orphans import cancel_orphans
from easel.worker.outputs import BLOCKED, SafetyPolicy, policy_for, screen_and_store

log = logging.getLogger(__name__)

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
        link: socket.socket | None = None,
    ) -> None:
        """`models`: catalog ids this worker claims (None: all); `preload`: load them first;
        `link`: its socket to `easel serve` (wake-ups in, READY out; `easel.wakeup`)."""
        self.settings = settings
        self.catalog = catalog
        self.db = db
        self.storage = storage
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.served = None if models is None else list(models)
        self.preload = preload
        self.link = link
        device = self._pick_device()
        budget = int(settings.model_memory_gb * 2**30)
        self.models = ModelCache(device, settings.max_loaded_models, budget, settings)
        self.enhancing = Enhancing(make_enhancer(settings, catalog, device), catalog, settings)
        self.presence = presence.Presence(
            worker_id=self.worker_id,
            host=socket.gethostname(),
            device=presence.describe_device(device),
            served_models=self.served,
            started_at=utcnow(),
            servable_models=self._servable(),
        )
        self.wake = asyncio.Event()
        self.batch_ended = asyncio.Event()
        self._in_flight: Counter[str] = Counter()  # model id -> batches running
        # local batches screening and storing outputs while the device serves the next one
        self._finishing = asyncio.Semaphore(max(1, settings.finishing_batches))
        self._remote: dict[str, Backend] = {}  # remote backends: outside the model cache
        # Read in the claim's transaction, used once by the batch: each claimed order's plan,
        # and the remote orders on their first claim (no attempt history to read).
        self._claimed_plans: dict[str, str] = {}
        self._first_claims: set[str] = set()
        # order id -> its upstream attempt's success, written with the order's end
        self._successes: dict[str, AttemptEnd] = {}
        # order id -> its first try's row, written by the claim (`_plan_first_tries`)
        self._planned: dict[str, PlannedAttempt] = {}
        # the remote orders' attempt begins and completions, written in groups
        self.writes = GroupCommit(db, settings.group_commit_max)
        self._reporting = asyncio.Lock()
        self._stopped = False  # the final presence report was written
        self.processed = 0
        self.recent_batches: deque[list[str]] = deque(maxlen=RECENT_BATCHES)  # order ids
        self._reported: list[str] | None = None  # loaded models as last reported

    name = "worker"

    def _serving(self) -> list[Model]:
        ids = self.served if self.served is not None else list(self.catalog.models)
        return [self.catalog.models[i] for i in ids if self.catalog.models[i].family in FAMILIES]

    def _servable(self) -> list[str]:
        """The models it serves whose weights are on disk or may be downloaded."""
        return [
            m.id
            for m in self._serving()
            if not backend_class(m.family).local or weights.servable(m)
        ]

    def _pick_device(self) -> str:
        """torch is imported only by a worker that serves a local family."""
        if not any(backend_class(m.family).local for m in self._serving()):
            return "none"
        from easel.backends.loading import pick_device

        return pick_device(self.settings.device)

    def services(self) -> list[Service]:
        """This worker's loop and its presence heartbeat, for `run_services`; with remote
        models, the sweep of their orphaned provider jobs (worker/orphans.py)."""
        beat = Periodic("presence", self.settings.worker_heartbeat_seconds, self.report_presence)
        found: list[Service] = [self, beat]
        if any(not self._is_local(m.id) for m in self._serving()):
            found.append(Periodic("orphans", self.settings.reaper_interval, self.cancel_orphans))
        return found

    async def cancel_orphans(self) -> int:
        """Jobs of this worker's remote models whose orders ended unfollowed: canceled there."""
        built = [b for b in self._remote.values() if isinstance(b, UpstreamBackend)]
        return await cancel_orphans(self.db, built, self.lease)

    def _is_local(self, model_id: str) -> bool:
        """Runs on this worker's device; so does a model gone from the catalog (it fails)."""
        model = self.catalog.models.get(model_id)
        return model is None or model.family not in FAMILIES or backend_class(model.family).local

    def _remote_room(self, model: Model) -> int:
        """Batches a remote model's backend can take beside those it runs."""
        return backend_class(model.family).capacity(model) - self._in_flight[model.id]

    def _claimable(self) -> list[str] | None:
        """Models with room for another batch (None: every model, no filter)."""
        local_busy = any(self._is_local(m) for m in +self._in_flight)
        serving = self._serving()
        room = [
            m.id
            for m in serving
            if (not local_busy if self._is_local(m.id) else self._remote_room(m) > 0)
        ]
        return None if self.served is None and len(room) == len(serving) else room

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set; the batches in hand are finished first."""
        listener = None
        if not self.db.is_sqlite:
            dsn = self.db.url.set(drivername="postgresql").render_as_string(hide_password=False)
            listener = asyncio.create_task(queue.listen_for_orders(dsn, self.wake.set, stop))
        batches: set[asyncio.Task[None]] = set()
        log.info("worker started", extra={"action": "start", "worker_id": self.worker_id})
        for model in self._serving():
            for line in describe_routes(model.id, model.channels):
                log.info("route: %s", line, extra={"action": "route", "model": model.id})
        try:
            if self.preload:
                await self._preload(stop)
            for model in self._serving():  # no weights: built now, the first claim plans tries
                if not self._is_local(model.id):
                    try:
                        await self._remote_backend(model)
                    except Exception:  # its orders fail when they build it again
                        log.exception(
                            "could not build a remote model's backend",
                            extra={"action": "load_error", "model": model.id},
                        )
            self._listen_to_link()
            while not stop.is_set():
                if listener is not None and listener.done():
                    listener.result()  # a dead listener stops the worker
                self.wake.clear()
                self.batch_ended.clear()
                models = self._claimable()
                if models == []:  # every model's backend is busy
                    await wait_any(self.batch_ended, stop, timeout=self.settings.poll_interval)
                    continue
                started = time.perf_counter()
                try:
                    claimed = await self.claim(models)
                except (DBAPIError, OSError):
                    metrics.CLAIM_DURATION.labels("error").observe(time.perf_counter() - started)
                    log.exception("claim failed; retrying", extra={"action": "claim_error"})
                    await wait_any(stop, timeout=self.settings.poll_interval)
                    continue
                outcome = "claimed" if claimed else "empty"
                metrics.CLAIM_DURATION.labels(outcome).observe(time.perf_counter() - started)
                for orders in claimed:
                    self._in_flight[orders[0].model] += 1  # before the next claim looks
                    task = asyncio.create_task(self._run_batch(orders))
                    batches.add(task)
                    task.add_done_callback(batches.discard)
                    task.add_done_callback(_log_failure)
                if claimed:
                    continue
                await wait_any(
                    self.wake, self.batch_ended, stop, timeout=self.settings.poll_interval
                )
        finally:
            await asyncio.gather(*batches, return_exceptions=True)
            await self.writes.close()
            for backend in self._remote.values():
                if isinstance(backend, UpstreamBackend):
                    await backend.aclose()
            await self.enhancing.aclose()
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
            if self.link is not None:
                asyncio.get_running_loop().remove_reader(self.link.fileno())
            try:
                await self.report_presence(stopped=True)
            except Exception:
                log.exception("could not record the stop", extra={"action": "presence_error"})
            log.info("worker stopped", extra={"action": "stop", "worker_id": self.worker_id})

    def _listen_to_link(self) -> None:
        """Wake on each byte from `easel serve`, and tell it this worker is ready."""
        link = self.link
        if link is None:
            return
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = link.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                self.wake.set()
            else:  # easel serve is gone (its death signal stops this process)
                loop.remove_reader(link.fileno())

        loop.add_reader(link.fileno(), readable)
        try:
            link.send(wakeup.READY)
        except OSError:
            log.warning("could not tell easel serve", extra={"action": "link_error"})

    async def _run_batch(self, orders: list[Order]) -> None:
        model = orders[0].model
        holds = {"device": True, "turn": False}

        async def generated() -> None:
            """A local batch's outputs are in hand: it waits for a finishing turn, then frees
            the device so the next batch is claimed while this one screens and stores."""
            if self.settings.finishing_batches < 1 or not self._is_local(model):
                return
            await self._finishing.acquire()
            holds["turn"] = True
            holds["device"] = False
            self._in_flight[model] -= 1
            self.batch_ended.set()

        try:
            await self.process(orders, generated)
        finally:
            if holds["device"]:
                self._in_flight[model] -= 1
            if holds["turn"]:
                self._finishing.release()
            self.batch_ended.set()

    async def _preload(self, stop: asyncio.Event) -> None:
        for model_id in self.served or []:
            if stop.is_set():
                return
            await self._backend(self.catalog.models[model_id])

    async def report_presence(self, *, stopped: bool = False) -> None:
        """Write this worker's row; one report at a time (the heartbeat, loads and the stop)."""
        async with self._reporting:
            if self._stopped:  # a heartbeat that came late must not revive the row
                return
            loaded = self.models.loaded
            async with self.db.transaction() as session:
                await presence.report(
                    session,
                    self.presence,
                    loaded,
                    self.models.loaded_bytes,
                    utcnow(),
                    stopped=stopped,
                )
            self._reported, self._stopped = loaded, stopped
            metrics.WORKER_HEARTBEATS.inc()

    async def claim(self, models: list[str] | None = None) -> list[list[Order]]:
        """Batches to run: a leader by the claim rule, then compatible followers up to
        EASEL_MAX_BATCH_IMAGES; or, when the leader is a remote order (one provider job each),
        further remote orders by the same rule in the same transaction, each a batch of its own,
        up to their models' free room and EASEL_REMOTE_CLAIM_MAX in all."""
        prefer = timedelta(seconds=self.settings.prefer_loaded_seconds)
        async with self.db.transaction() as session:
            await session.connection()  # begin now (SQLite: take the writer lock)
            now = utcnow()  # once the transaction began: the orders leave the queue now
            first = await queue.claim_one(
                session,
                self.worker_id,
                now,
                self.lease,
                models=models,
                loaded=self.models.loaded,
                prefer_loaded_for=prefer,
            )
            claimed: list[Order] = []
            if first is not None:
                found = [first]
                if not self._is_local(first[0].model):
                    found += await self._claim_remote(session, first[0].model, now)
                claimed = [order for order, _ in found]
                plans = {order.id: plan for order, plan in found}
                for order in claimed:
                    lifecycle.started(session, order, now)
                planned = await self._plan_first_tries(session, claimed, now)
        leader = claimed[0] if claimed else None
        if leader is None:
            return []
        self._claimed_plans |= plans  # once committed: a failed claim leaves nothing behind
        self._planned |= planned
        if not self._is_local(leader.model):
            self._first_claims.update(o.id for o in claimed if o.attempts == 1)
            return [[order] for order in claimed]
        room = self.settings.max_batch_images - leader.n
        model = self.catalog.models.get(leader.model)
        if model is not None and runs_alone(model):
            room = 0  # video from a first frame, instruction editing: one order per call
        followers: list[Order] = []
        if room > 0:
            try:
                async with self.db.transaction() as session:
                    followers = await queue.claim_followers(
                        session, leader, self.worker_id, utcnow(), self.lease, room
                    )
                    for order in followers:
                        lifecycle.started(session, order, utcnow())
                    plans = await _plans_by_order(session, followers)
                self._claimed_plans |= plans
            except (DBAPIError, OSError):
                log.exception(
                    "claiming a batch failed; running the order alone",
                    extra={"action": "claim_error", "order_id": leader.id},
                )
                followers = []
        return [[leader, *followers]]

    async def _plan_first_tries(
        self, session: AsyncSession, claimed: list[Order], now: datetime
    ) -> dict[str, PlannedAttempt]:
        """The `submitting` rows of upstream orders' first tries, in the claim's transaction (one
        write fewer per order): for each order on its first claim that goes straight to its
        provider (no stored inputs, no prompt enhancement) and whose backend's first route is a
        remote channel with a closed breaker and a free slot (`UpstreamBackend.first_channel`).
        """
        rows: list[attempts.NewAttempt] = []
        stale: list[str] = []
        taken: dict[str, Counter[str]] = {}  # model id -> channel -> tries planned, not taken
        for p in self._planned.values():
            taken.setdefault(p.model, Counter())[p.channel] += 1
        for order in claimed:
            if order.attempts != 1:
                earlier = self._planned.pop(order.id, None)  # an earlier run's, of this worker
                if earlier is not None:
                    stale.append(earlier.attempt_id)
                continue
            model = self.catalog.models.get(order.model)
            if model is None or self._is_local(model.id) or order.llm_enhance:
                continue
            if order.reference_key is not None or order.inputs:
                continue
            backend = self._remote.get(model.id)
            if not isinstance(backend, UpstreamBackend) or backend.model != model:
                continue  # built by the order's batch (outside this transaction)
            planned = taken.setdefault(model.id, Counter())
            channel = backend.first_channel(planned)
            if channel is None:
                continue
            planned[channel.name] += 1
            rows.append(
                attempts.NewAttempt(
                    order.id,
                    1,
                    model.id,
                    channel.name,
                    channel.provider,
                    order.n,
                    self.worker_id,
                    now,
                )
            )
        await attempts.discard(session, stale)  # never sent: that run lost the order first
        ids = await attempts.begin_many(session, rows)
        return {
            row.order_id: PlannedAttempt(attempt_id, row.model, row.channel, now)
            for attempt_id, row in zip(ids, rows, strict=True)
        }

    async def _unplan(self, order_ids: Sequence[str]) -> None:
        """First tries written by the claim whose orders ended before calling the provider
        (failed inputs, canceled, the model gone): their rows are deleted (nothing was sent)."""
        left = [p for p in (self._planned.pop(i, None) for i in order_ids) if p is not None]
        if not left:
            return
        try:
            async with self.db.transaction() as session:
                await attempts.discard(session, [p.attempt_id for p in left])
        except (DBAPIError, OSError):
            log.exception(
                "could not delete unsent attempts; they stay `submitting`",
                extra={"action": "end_error", "order_ids": list(order_ids)},
            )

    async def _claim_remote(
        self, session: AsyncSession, model_id: str, now: datetime
    ) -> list[tuple[Order, str]]:
        """More remote orders after a remote leader (of `model_id`), in its transaction: one
        claim per order by the claim rule, among the remote models this worker serves that have
        room left, until one would wait for an account another transaction holds (PostgreSQL).
        Each with its plan, in the order of their claims."""
        room = {m.id: self._remote_room(m) for m in self._serving() if not self._is_local(m.id)}
        room[model_id] = room.get(model_id, 1) - 1
        more: list[tuple[Order, str]] = []
        while len(more) + 1 < self.settings.remote_claim_max:
            open_ = [m for m, free in room.items() if free > 0]
            if not open_:
                break
            claimed = await queue.claim_one(
                session, self.worker_id, now, self.lease, models=open_, wait=False
            )
            if claimed is None:
                break
            room[claimed[0].model] -= 1
            more.append(claimed)
        return more

    async def process(
        self, orders: list[Order], generated: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Run one batch; every order ends on its own (completed, failed, canceled or lost).
        `generated` is awaited once the outputs are in hand, before they are screened and
        stored (the leases are renewed until every order is settled)."""
        ids = [o.id for o in orders]
        self.recent_batches.append(ids)
        log.info("orders claimed", extra={"action": "claim", "order_ids": ids})
        batch = BatchRun(orders)
        heartbeat = asyncio.create_task(self._heartbeat(batch))
        try:
            policies = await self._safety_policies(orders)
            results = await self._generate(batch)
            if generated is not None:
                await generated()
            await self._end_failures(batch)
            for order in orders:
                if batch.is_live(order.id):
                    await self._deliver(batch, order, results, policies.get(order.id))
        except LeaseLost:
            for order_id in batch.live:  # another holds them now: nothing is ended here
                batch.lose(order_id)
        except Canceled:
            # Raised by progress once every order has dropped out (each was ended then), or by
            # a backend that saw the work canceled at its end.
            for order_id in batch.live:
                batch.drop(order_id)
                await self._end(
                    order_id, "canceled", "canceled by the client", status=OrderStatus.CANCELED
                )
        except Rerouted as exc:
            batch.drop(exc.order_id)
            await self._hand_off(exc)
        except (ModelUnavailable, BackendFailure) as exc:
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
            for order_id in ids:
                self._claimed_plans.pop(order_id, None)
                self._first_claims.discard(order_id)
            await self._settle_alone(ids)
            await self._unplan(ids)

    async def _safety_policies(self, orders: list[Order]) -> dict[str, SafetyPolicy]:
        """The orders whose outputs are checked, with their plan's threshold and action: every
        order when EASEL_SAFETY_FORCE is on or its plan has no safety_optional, else those that
        asked (safety_check). The plans were read in the claim's transaction."""
        claimed = {o.id: self._claimed_plans.pop(o.id, None) for o in orders}
        plans = {k: v for k, v in claimed.items() if v is not None}
        if len(plans) < len(orders):  # orders this worker did not claim (called directly)
            async with self.db.transaction(readonly=True) as session:
                plans = await _plans_by_order(session, orders)
        policies = {}
        for order in orders:
            policy = policy_for(
                self.catalog.plans.get(plans.get(order.id) or ""),
                order.safety_check,
                self.settings.safety_force,
                self.settings.safety_threads,
                self.settings.safety_frame_every,
                self.settings.safety_chunk,
            )
            if policy is not None:
                policies[order.id] = policy
        return policies

    async def _deliver(
        self,
        batch: BatchRun,
        order: Order,
        results: dict[tuple[str, int], GeneratedImage],
        policy: SafetyPolicy | None = None,
    ) -> None:
        """Screen and store one order's images and complete it in its own transaction (every
        output blocked: it fails with content_policy, refunded; some: refunded per image)."""
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
            outputs = [i for i in images if i]
            keys = await asyncio.to_thread(
                screen_and_store, self.storage, order.id, outputs, policy
            )
            blocked = [k.index for k in keys if k.safety == BLOCKED]
            batch.drop(order.id)  # settled: the heartbeat stops renewing it
            if len(blocked) == len(keys):
                log.info("outputs blocked", extra={"action": "blocked", "order_id": order.id})
                await self._end(
                    order.id,
                    "content_policy",
                    "the safety check blocked every output of this order (content policy); "
                    "the order was refunded. Change the prompt and try again",
                    held=keys,
                )
                return
            done = await self._complete(order, keys, blocked)
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

    async def _complete(
        self, order: Order, keys: list[lifecycle.NewOutput], blocked: list[int]
    ) -> Order | None:
        """Complete the order with its upstream attempt's success (if any) in one transaction; a
        remote order's in a group with others ready at the same time (`GroupCommit`). None: the
        lease was lost; the order is left as it is. On an error the success is kept for the
        transaction that fails the order."""
        end = self._successes.pop(order.id, None)
        refund = sum(lifecycle.output_price(order, i) for i in blocked)
        write = OrderDone(self.worker_id, lifecycle.Completion(order.id, keys, refund), end)
        try:
            if not self._is_local(order.model):
                done: Order | None = await self.writes.write(write)
                return done
            async with self.db.transaction() as session:
                done = await write(session)
                return done
        except BaseException:
            if end is not None:
                self._successes[order.id] = end
            raise

    async def _end_failures(self, batch: BatchRun) -> None:
        for order_id, (code, message) in batch.take_failures().items():
            await self._end(order_id, code, message)

    async def _end(
        self,
        order_id: str,
        code: str,
        message: str,
        status: str = OrderStatus.FAILED,
        held: Sequence[lifecycle.NewOutput] = (),
    ) -> None:
        """Fail (or cancel) and refund; a database error leaves it to the reaper. A first try
        the claim wrote and nobody sent is deleted with it."""
        planned = self._planned.pop(order_id, None)  # not taken by the batch from now on
        try:
            async with self.db.transaction() as session:
                if planned is not None:
                    await attempts.discard(session, [planned.attempt_id])
                await lifecycle.fail(
                    session,
                    order_id,
                    self.worker_id,
                    code,
                    message,
                    utcnow(),
                    status=status,
                    held=held,
                )
                end = self._successes.get(order_id)  # kept until the transaction commits
                if end is not None:
                    await end.write(session)
            self._successes.pop(order_id, None)
        except (DBAPIError, OSError):
            if planned is not None:
                self._planned[order_id] = planned  # its row stands: `_unplan` tries again
            log.exception(
                "could not end the order; its lease will expire",
                extra={"action": "end_error", "order_id": order_id},
            )

    async def _settle_alone(self, order_ids: Sequence[str]) -> None:
        """Successes whose order ended no other way (a database error): written on their own."""
        ends = [e for e in (self._successes.pop(i, None) for i in order_ids) if e is not None]
        if not ends:
            return
        try:
            async with self.db.transaction() as session:
                for end in ends:
                    await end.write(session)
        except (DBAPIError, OSError):
            log.exception(
                "could not record the attempts; they stay open for the next run",
                extra={"action": "end_error", "order_ids": list(order_ids)},
            )

    async def _hand_off(self, rerouted: Rerouted) -> None:
        """An upstream order goes on as its local channel's model, in the queue."""
        try:
            async with self.db.transaction() as session:
                held = await attempts.hand_off(
                    session, rerouted.order_id, self.worker_id, rerouted.model_id
                )
        except (DBAPIError, OSError):
            log.exception(
                "could not hand the order over; its lease will expire",
                extra={"action": "end_error", "order_id": rerouted.order_id},
            )
            return
        log.info(
            "order handed to a local model" if held else "lease lost; leaving the order",
            extra={"action": "reroute", "order_id": rerouted.order_id, "model": rerouted.model_id},
        )

    async def _backend(self, model: Model) -> Backend:
        if not self._is_local(model.id):
            return await self._remote_backend(model)
        in_use = set(+self._in_flight)  # never unloaded under a running batch
        backend = await asyncio.to_thread(self.models.get, model, in_use)
        if self.models.loaded != self._reported:
            try:
                await self.report_presence()
            except (DBAPIError, OSError):
                log.exception("could not report loaded models", extra={"action": "presence_error"})
        return backend

    async def _remote_backend(self, model: Model) -> Backend:
        """A remote model's backend, kept apart from the model cache (it holds no memory)."""
        backend = self._remote.get(model.id)
        if backend is None or backend.model != model:
            backend = backend_class(model.family)(model, "none", self.settings)
            backend.load()
            if isinstance(backend, UpstreamBackend):
                backend.attempts = DatabaseAttemptLog(
                    self.db,
                    self.worker_id,
                    model.id,
                    self._first_claims,
                    self._successes,
                    self.writes,
                    self._planned,
                )
                backend.catalog = self.catalog
            self._remote[model.id] = backend
        return backend

    async def _inputs(self, batch: BatchRun) -> tuple[dict[str, bytes], dict[str, OrderFiles]]:
        """Each order's reference image, further images and mask from storage; an order whose
        file is gone or cannot be read fails (refunded), the others go on."""
        references: dict[str, bytes] = {}
        further: dict[str, OrderFiles] = {}
        for order in batch.orders:
            if not batch.is_live(order.id):
                continue
            inputs = load_inputs(order.inputs)
            try:
                if order.reference_key is not None:
                    references[order.id] = await self._read(order.reference_key)
                if inputs.keys:
                    images = [await self._read(k) for k in inputs.images]
                    mask = None if inputs.mask is None else await self._read(inputs.mask)
                    further[order.id] = OrderFiles(images=tuple(images), mask=mask)
            except MissingObject:
                batch.fail(
                    order.id,
                    "reference_missing",
                    "an input image or the mask of the order is no longer stored; submit the "
                    "order again",
                )
            except Exception as exc:
                log.exception("input unreadable", extra={"action": "fail", "order_id": order.id})
                batch.fail(
                    order.id,
                    "reference_unavailable",
                    f"an input image or the mask of the order could not be read "
                    f"({type(exc).__name__}); the order was refunded",
                )
        return references, further

    async def _read(self, key: str) -> bytes:
        return await asyncio.to_thread(self.storage.get, key)

    async def _generate(self, batch: BatchRun) -> dict[tuple[str, int], GeneratedImage]:
        leader = batch.orders[0]
        model = self.catalog.models.get(leader.model)
        if model is None:
            raise ModelUnavailable(f"model {leader.model!r} is no longer in this worker's catalog")
        if self._is_local(model.id) and model.id not in self.models.loaded:
            await self._fetch(batch, model)  # remote models have no weights here
        backend = await self._backend(model)
        if batch.live and any(o.stage == LOADING_MODEL for o in batch.orders):
            await self._stage(batch, stage=GENERATING)
        references, further = await self._inputs(batch)
        orders = [o for o in batch.orders if batch.is_live(o.id)]
        if not orders:
            return {}
        loras = await resolve_loras(self.catalog, self.settings, batch.orders[0].loras)
        enhanced = await self._enhance(model, orders)
        job = build_job(model, orders, references, loras, enhanced)
        job = with_inputs(job, further)
        started = time.perf_counter()
        results = await run_splitting(backend, job, self._progress(batch), batch)
        metrics.GENERATION_DURATION.labels(model.id).observe(time.perf_counter() - started)
        return results

    async def _enhance(self, model: Model, orders: list[Order]) -> dict[str, tuple[str, str]]:
        """The enhanced (prompt, negative prompt) of each order that asked for llm_enhance,
        recorded on the order; an order the enhancer skipped (or whose enhanced text matches
        the content policy list) keeps its own prompt and gets its enhance credits back."""
        asked = [o for o in orders if o.llm_enhance]
        if not asked:
            return {}
        deadline = self.enhancing.deadline()  # one for the batch
        outcomes = [
            self._vetted(outcome)
            for outcome in await asyncio.gather(
                *(self.enhancing.enhance(o.prompt, model.family, o.seed, deadline) for o in asked)
            )
        ]
        enhanced = {}
        now = utcnow()
        async with self.db.transaction() as session:
            for order, outcome in zip(asked, outcomes, strict=True):
                prompt = negative = None
                if outcome.enhancement is not None:
                    prompt = model.render_prompt(outcome.enhancement.prompt)
                    negative = outcome.enhancement.negative_prompt
                    enhanced[order.id] = (prompt, order.negative_prompt or negative)
                elif order.enhance_credits:
                    await ledger.refund_part(
                        session,
                        order.id,
                        order.enhance_credits,
                        now,
                        f"prompt enhancement skipped: {outcome.note}",
                        kind=ledger.REFUND_ENHANCE,
                    )
                await lifecycle.record_enhancement(
                    session,
                    order.id,
                    self.worker_id,
                    outcome.status,
                    prompt,
                    negative,
                    outcome.note or None,
                )
                order.enhance_status, order.enhanced_prompt = outcome.status, prompt
        for order, outcome in zip(asked, outcomes, strict=True):
            log.info(
                "prompt enhanced" if outcome.enhancement else "prompt enhancement skipped",
                extra={"action": "enhance", "order_id": order.id, "note": outcome.note},
            )
        return enhanced

    def _vetted(self, outcome: Outcome) -> Outcome:
        """An enhancement whose prompt or negative prompt matches the content policy list is
        not used (skipped: content policy)."""
        found = outcome.enhancement
        if found is None:
            return outcome
        if listed(self.catalog.safety, found.prompt) or listed(
            self.catalog.safety, found.negative_prompt
        ):
            return Outcome(SKIPPED, None, "content policy: the enhanced prompt matches the list")
        return outcome

    async def _stage(self, batch: BatchRun, **fields: Any) -> None:
        """Record what the batch is doing (`orders.stage`, load bytes) on its live orders."""
        for order in batch.orders:
            for key, value in fields.items():
                setattr(order, key, value)
        extra = {"load_bytes_done": None, "load_bytes_total": None} | fields
        try:
            await self._renew(batch, **extra)
        except (DBAPIError, OSError):
            log.exception("stage report failed", extra={"action": "heartbeat_error"})

    async def _fetch(self, batch: BatchRun, model: Model) -> None:
        """A first load shows as `loading_model`; weights that are not here yet are downloaded
        first, with bytes done of total in the orders' status (at most every
        EASEL_PROGRESS_INTERVAL)."""
        await self._stage(batch, stage=LOADING_MODEL)
        missing = [
            p
            for p in weights.parts(model)
            if not p.is_local and p.field != "config" and weights.on_disk(p) is None
        ]
        if not missing or weights.offline() or not backend_class(model.family).local:
            return
        loop = asyncio.get_running_loop()
        last = 0.0

        def progress(_name: str, _done: int, _size: int, done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last < self.settings.progress_interval and done < total:
                return
            last = now
            report = self._stage(
                batch, stage=LOADING_MODEL, load_bytes_done=done, load_bytes_total=total
            )
            asyncio.run_coroutine_threadsafe(report, loop).result()

        for part in missing:
            variant = model.variant if part.field == "source" else None
            log.info(
                "downloading model weights",
                extra={"action": "download", "model": model.id, "repo": part.ref},
            )
            await asyncio.to_thread(weights.download, part.ref, variant, progress)

    def _progress(self, batch: BatchRun) -> ProgressFn:
        """Awaited after each step: records progress (at most every EASEL_PROGRESS_INTERVAL)
        and raises Canceled once no order of the batch is left."""
        last = 0.0

        async def progress(step: int, total: int) -> None:
            nonlocal last
            if not batch.live:
                raise batch.stopped()
            now = time.monotonic()
            if step < total and now - last < self.settings.progress_interval:
                return
            last = now
            percent = min(99, step * 100 // max(total, 1))
            try:
                await self._renew(batch, step=step, total_steps=total, progress=percent)
            except (DBAPIError, OSError):
                log.exception("progress report failed", extra={"action": "heartbeat_error"})
            if not batch.live:
                raise batch.stopped()

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
                    batch.lose(order_id)
                    log.warning(
                        "lease lost; leaving the order",
                        extra={"action": "lost", "order_id": order_id},
                    )
            elif held[order_id] and batch.is_live(order_id):
                batch.drop(order_id)
                await self._end(
                    order_id, "canceled", "canceled by the client", status=OrderStatus.CANCELED
                )

    async def _heartbeat(self, batch: BatchRun) -> None:
        """Renew every third of the lease; a failed renewal is retried at the next beat."""
        while batch.live:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            try:
                await self._renew(batch)
            except (DBAPIError, OSError):
                log.exception("lease renewal failed", extra={"action": "heartbeat_error"})


async def _plans_by_order(session: AsyncSession, orders: Sequence[Order]) -> dict[str, str]:
    """Order id -> its account's plan id."""
    if not orders:
        return {}
    plans = await plans_of(session, {o.account_id for o in orders})
    return {o.id: plans.get(o.account_id, "") for o in orders}


def _log_failure(task: asyncio.Task[None]) -> None:
    """A batch's own errors end its orders; anything that escapes is logged here."""
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "batch failed outside its orders' handling; leases will expire",
            extra={"action": "batch_error"},
            exc_info=task.exception(),
        )
