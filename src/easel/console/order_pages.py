"""Playground, History and one order's page (live over SSE, Reproduce, run again, cancel)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from easel.accounts import ledger
from easel.api.deps import State
from easel.api.routes.events import order_events
from easel.api.state import AppState
from easel.clock import utcnow
from easel.console import reproduce
from easel.console.web import ConsoleRoute, FormDep, Person, PersonDep, render, see_other
from easel.db.status import FINAL, OrderStatus
from easel.db.tables import Order
from easel.dialects import console as dialect
from easel.dialects.base import output_urls
from easel.dialects.common import place
from easel.dialects.registry import DIALECTS
from easel.errors import EaselError, InvalidRequest
from easel.orders import lifecycle, queue, reads
from easel.orders.changes import Watch
from easel.orders.request import MAX_SEED
from easel.webhooks import deliveries

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def _defaults(state: AppState, account_plan: str) -> dict[str, str]:
    plan = state.catalog.plans[account_plan]
    styles = state.catalog.style_names
    allowed = [
        s for s in styles if (m := state.catalog.style(s)) is not None and plan.allows_model(m.id)
    ]
    return {"style": (allowed or styles)[0], "product_type": "static_image", "acceleration": "none"}


def _form_context(state: AppState, who: Person, form: Mapping[str, str]) -> dict[str, Any]:
    catalog = state.catalog
    plan = catalog.plans[who.account.plan]
    style = form.get("style") or _defaults(state, who.account.plan)["style"]
    model = catalog.style(style) or catalog.models[next(iter(catalog.models))]
    return {
        "form": form,
        "styles": [
            (s, plan.allows_model(m.id))
            for s in catalog.style_names
            if (m := catalog.style(s)) is not None
        ],
        "products": list(catalog.products.values()),
        "presets": dialect.size_presets(model),
        "model": model,
        "plan": plan,
        "nonce": secrets.token_urlsafe(16),
    }


def _quote(state: AppState, who: Person, form: Mapping[str, str]) -> tuple[int | None, str]:
    try:
        # The price does not depend on the prompt: quote before one is written.
        req = dialect.to_request(state, {**form, "prompt": form.get("prompt") or "-"})
        return dialect.quote(state, who.account, req), ""
    except EaselError as exc:
        return None, exc.message


@router.get("/console/playground")
async def playground(request: Request, who: PersonDep, state: State) -> Response:
    form = _defaults(state, who.account.plan) | dict(request.query_params)
    cost, problem = _quote(state, who, form)
    async with state.db.transaction() as session:
        plan = state.catalog.plans.get(who.account.plan)
        balance = await ledger.balance_with_grant(session, who.account.id, plan, utcnow())
    return render(
        request,
        state,
        who.visitor,
        "playground.html",
        errors={},
        cost=cost,
        cost_problem=problem,
        balance=balance,
        **_form_context(state, who, form),
    )


@router.get("/console/playground/cost")
async def cost(request: Request, who: PersonDep, state: State) -> HTMLResponse:
    """The cost line for the form as it is now (htmx swaps it in on every change)."""
    amount, problem = _quote(state, who, dict(request.query_params))
    return render(request, state, who.visitor, "cost.html", cost=amount, cost_problem=problem)


async def _place(state: AppState, who: Person, form: Mapping[str, str]) -> Order:
    req = dialect.to_request(state, form)
    order, _ = await place(state, who.account, req)
    return order


@router.post("/console/playground")
async def generate(request: Request, form: FormDep, who: PersonDep, state: State) -> Response:
    try:
        order = await _place(state, who, form)
    except EaselError as exc:
        if exc.status_code >= 500:
            raise
        async with state.db.transaction(readonly=True) as session:
            balance = await ledger.balance(session, who.account.id, utcnow())
        return render(
            request,
            state,
            who.visitor,
            "playground.html",
            exc.status_code,
            errors={exc.param or "prompt": exc.message},
            cost=None,
            cost_problem="",
            balance=balance,
            **_form_context(state, who, form),
        )
    return see_other(f"/console/orders/{order.id}")


def _again_form(state: AppState, order: Order, seed: int) -> dict[str, str]:
    refusal = reproduce.again_refusal(state.catalog, order)
    body = reproduce.native_body(state.catalog, order)
    if refusal or body is None:
        raise InvalidRequest(refusal or "this order cannot be run again")
    form = {k: str(v) for k, v in body.items()}
    form["seed"] = str(seed)
    form["acceleration"] = order.acceleration
    form["llm_enhance"] = "on" if order.llm_enhance else ""
    return form


@router.post("/console/orders/{order_id}/again")
async def run_again(order_id: str, form: FormDep, who: PersonDep, state: State) -> Response:
    async with state.db.transaction(readonly=True) as session:
        order = await reads.own_order(session, who.account.id, order_id)
    seed = secrets.randbelow(MAX_SEED + 1) if form.get("new_seed") else order.seed
    again = await _place(state, who, _again_form(state, order, seed))
    return see_other(f"/console/orders/{again.id}")


@router.post("/console/orders/{order_id}/cancel")
async def cancel(order_id: str, form: FormDep, who: PersonDep, state: State) -> Response:
    try:
        async with state.db.transaction() as session:
            await lifecycle.cancel(session, who.account.id, order_id, utcnow())
    except EaselError as exc:
        if exc.status_code == 404:
            raise
    return see_other(f"/console/orders/{order_id}")


def _since(text: str) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=utcnow().tzinfo)
    except ValueError:
        raise InvalidRequest(
            f"from must be a date like 2026-01-31, got {text!r}", param="from"
        ) from None


@router.get("/console/history")
async def history(
    request: Request,
    who: PersonDep,
    state: State,
    status: str = "",
    model: str = "",
    dialect_name: Annotated[str, Query(alias="dialect")] = "",
    since: Annotated[str, Query(alias="from")] = "",
    before: str = "",
) -> Response:
    filters = {"status": status, "model": model, "dialect": dialect_name, "from": since}
    async with state.db.transaction(readonly=True) as session:
        page = await reads.list_orders(
            session,
            who.account.id,
            limit=state.settings.console_page_size,
            before=before or None,
            status=status or None,
            model=model or None,
            dialect=dialect_name or None,
            since=_since(since),
        )
    cards = [(o, output_urls(o, outs, state.storage)) for o, outs in page.orders]
    query = {k: v for k, v in filters.items() if v}
    older = urlencode(query | {"before": page.next_before}) if page.next_before else ""
    return render(
        request,
        state,
        who.visitor,
        "history.html",
        cards=cards,
        filters=filters,
        older=older,
        query=query,
        statuses=[s.value for s in OrderStatus],
        dialects=list(DIALECTS),
        styles=state.catalog.style_names,
    )


@router.get("/console/orders/{order_id}")
async def order_page(request: Request, order_id: str, who: PersonDep, state: State) -> Response:
    async with state.db.transaction(readonly=True) as session:
        order = await reads.own_order(session, who.account.id, order_id)
        order, outputs = await reads.with_outputs(session, order)
        position = (
            await queue.queue_position(session, order)
            if order.status == OrderStatus.PENDING
            else None
        )
        sent = await deliveries.list_deliveries(
            session, who.account.id, limit=state.settings.console_page_size, order_id=order.id
        )
    urls = output_urls(order, outputs, state.storage)
    timings = _timings(order)
    return render(
        request,
        state,
        who.visitor,
        "order.html",
        order=order,
        outputs=list(zip(urls, sorted(outputs, key=lambda o: o.index), strict=True)),
        position=position,
        deliveries=sent,
        final=order.status in FINAL,
        timings=timings,
        snippets=reproduce.snippets(state.catalog, state.settings.base_url, order),
        again_refusal=reproduce.again_refusal(state.catalog, order),
    )


def _timings(order: Order) -> dict[str, str]:
    def span(a: datetime | None, b: datetime | None) -> str:
        return f"{(b - a) / timedelta(seconds=1):.1f} s" if a and b else "—"

    return {
        "queued": span(order.created_at, order.started_at),
        "ran": span(order.started_at, order.completed_at),
        "total": span(order.created_at, order.completed_at),
    }


async def _watch(order_id: str, who: PersonDep, state: State) -> AsyncIterator[Watch]:
    async with state.db.transaction(readonly=True) as session:
        await reads.own_order(session, who.account.id, order_id)
    async with state.feed.watch(order_id) as watch:
        yield watch


@router.get("/console/orders/{order_id}/events", response_class=EventSourceResponse)
async def events(
    order_id: str, watch: Annotated[Watch, Depends(_watch)], state: State
) -> AsyncIterator[ServerSentEvent]:
    """The native API's event stream for the signed-in account's order."""
    async for event in order_events(order_id, watch, state):
        yield event
