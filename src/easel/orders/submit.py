"""Submit: plan gating, price, then debit + order row + wake-up in the caller's transaction."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from easel import metrics, wakeup
from easel.accounts import ledger
from easel.accounts.accounts import lock_account
from easel.catalog import Catalog
from easel.catalog.pricing import check_plan, check_served, enhance_price, order_price
from easel.clock import utcnow
from easel.config import Settings
from easel.db.engine import Database
from easel.db.status import OrderStatus
from easel.db.tables import Account, Order
from easel.errors import Conflict, InvalidRequest, NoWorker
from easel.ids import new_order_id
from easel.media.loras import fetch_lora
from easel.net.check import check_url
from easel.net.policy import url_policy
from easel.orders.inputs import plan_inputs
from easel.orders.loras import dump_loras
from easel.orders.queue import fair_seq, notify_new_order
from easel.orders.request import GenerationRequest
from easel.orders.retention import delete_keys
from easel.orders.serving import WAITING_FOR_WORKER, is_served, waiting_message
from easel.safety.prompt_classifier import PromptClassifier
from easel.safety.prompts import refuse_listed
from easel.storage import Storage

DEFAULT_RETENTION = timedelta(days=14)


async def find_by_idempotency_key(session: AsyncSession, account_id: str, key: str) -> Order | None:
    return await session.scalar(
        select(Order).where(Order.account_id == account_id, Order.idempotency_key == key)
    )


class Placing(Protocol):
    """What placing an order needs of the process (the API's AppState is one)."""

    settings: Settings
    catalog: Catalog
    db: Database
    storage: Storage

    @property
    def served_families(self) -> frozenset[str]: ...

    @property
    def prompt_classifier(self) -> PromptClassifier | None: ...


async def place_order(ctx: Placing, account: Account, req: GenerationRequest) -> tuple[Order, bool]:
    """What every dialect calls: outbound URL checks (outside any lock), the reference image
    stored under the order's id, then one transaction. A refused order leaves nothing stored."""
    db, catalog, settings, storage = ctx.db, ctx.catalog, ctx.settings, ctx.storage
    refuse_listed(catalog.safety, req.prompt)  # refused (content_policy) before anything else
    plan = catalog.plans.get(account.plan)
    if plan is not None:
        check_plan(catalog, plan, req)  # a plan refusal (403) first, as submit() gives it
    check_served(catalog, req, ctx.served_families)
    heartbeat = timedelta(seconds=settings.worker_heartbeat_seconds)
    async with db.transaction(readonly=True) as session:
        unserved = not await is_served(session, req.model.id, utcnow(), heartbeat)
    if unserved and settings.unserved == "refuse":
        raise NoWorker(
            f"{waiting_message(req.model.id)} is running now, so the order was not placed and "
            f"nothing was charged; try again later (the operator starts one with `easel worker`, "
            f"and `easel models pull {req.model.id}` provides its weights)",
            retry_after=settings.unserved_retry_after,
        )
    if ctx.prompt_classifier is not None:  # after the cheap refusals, before any fetch
        await ctx.prompt_classifier.check(req.prompt)
    if req.webhook_url:
        await check_url(req.webhook_url, req.webhook_param, url_policy(settings))
    for number, lora in enumerate(req.added_loras):  # a wrong hash is refused, nothing charged
        if lora.url is not None and lora.sha256 is not None:
            await fetch_lora(
                settings,
                lora.url,
                lora.sha256,
                url_param=f"loras[{number}].url",
                hash_param=f"loras[{number}].sha256",
            )
    retention = timedelta(days=settings.output_retention_days)
    now = utcnow()
    order_id = new_order_id(now)
    reference_key = None
    if req.reference is not None:
        extension = req.reference.content_type.removeprefix("image/")
        reference_key = f"{order_id}/reference.{extension}"
    inputs, further = plan_inputs(order_id, req.more_references, req.mask)
    stored_keys = ([reference_key] if reference_key else []) + inputs.keys
    try:
        if req.reference is not None and reference_key:
            await asyncio.to_thread(
                storage.put, reference_key, req.reference.data, req.reference.content_type
            )
        for item in further:
            data, content_type = item.reference.data, item.reference.content_type
            await asyncio.to_thread(storage.put, item.key, data, content_type)
        async with db.transaction() as session:
            order, created = await submit(
                session,
                catalog,
                account,
                req,
                now,
                retention=retention,
                order_id=order_id,
                reference_key=reference_key,
                inputs=inputs.dump(),
            )
            if created and unserved:  # EASEL_UNSERVED=queue: its status says what it waits for
                order.stage = WAITING_FOR_WORKER
    except BaseException:
        await delete_keys(storage, stored_keys)
        raise
    if not created:
        await delete_keys(storage, stored_keys)
    return order, created


async def submit(
    session: AsyncSession,
    catalog: Catalog,
    account: Account,
    req: GenerationRequest,
    now: datetime,
    retention: timedelta = DEFAULT_RETENTION,
    order_id: str | None = None,
    reference_key: str | None = None,
    inputs: str = "",
) -> tuple[Order, bool]:
    """The order and whether it was created now (False: an idempotent replay)."""
    plan = catalog.plans.get(account.plan)
    if plan is None:
        raise InvalidRequest(f"account plan {account.plan!r} is not in the catalog")
    check_plan(catalog, plan, req)  # the prompt list is place_order's, checked once, first
    cost = order_price(plan, req, req.llm_enhance)
    locked = await lock_account(session, account.id)
    if req.idempotency_key:
        earlier = await find_by_idempotency_key(session, account.id, req.idempotency_key)
        if earlier is not None:
            if earlier.request_hash != req.request_hash:
                raise Conflict(
                    f"Idempotency-Key {req.idempotency_key!r} was used for another request "
                    f"(order {earlier.id}); use a new key for a new request"
                )
            return earlier, False
    if req.external_task_id:
        taken = await session.scalar(
            select(Order.id).where(
                Order.account_id == account.id, Order.external_task_id == req.external_task_id
            )
        )
        if taken:
            raise Conflict(
                f"external_task_id {req.external_task_id!r} is already used by task {taken}",
                param="external_task_id",
            )
    await ledger.ensure_grant(session, account.id, plan, now)
    order_id = order_id or new_order_id(now)
    await ledger.debit(session, account.id, order_id, cost, now)
    seq = await fair_seq(session, locked, plan.priority, req.n)
    order = Order(
        id=order_id,
        account_id=account.id,
        dialect=req.dialect,
        external_task_id=req.external_task_id,
        idempotency_key=req.idempotency_key,
        request_hash=req.request_hash,
        model=req.model.id,
        model_alias=req.model_alias,
        product_type=req.product.id,
        task_type=req.task_type,
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        width=req.width,
        height=req.height,
        n=req.n,
        frames=req.frames or req.product.frames,
        steps=req.steps,
        guidance=req.guidance,
        seed=req.seed,
        acceleration=req.acceleration,
        output_format=req.output_format,
        reference_key=reference_key,
        strength=req.strength,
        inputs=inputs,
        loras=dump_loras(req.loras),
        llm_enhance=req.llm_enhance,
        safety_check=req.safety_check,
        webhook_url=req.webhook_url,
        dialect_data=req.dialect_data.as_json() if req.dialect_data else {},
        webhook_on_start=req.webhook_on_start,
        status=OrderStatus.PENDING,
        progress=0,
        step=0,
        total_steps=req.steps,
        priority=plan.priority,
        fair_seq=seq,
        cost_credits=cost,
        enhance_credits=enhance_price(plan, req.llm_enhance),
        attempts=0,
        cancel_requested=False,
        created_at=now,
        outputs_expire_at=now + retention,
    )
    session.add(order)
    await session.flush()
    await notify_new_order(session)
    metrics.after_commit(session, wakeup.wake_local_workers)  # `easel serve`'s own worker
    return order, True
