"""The account's pages: home, plans, API keys, usage, webhooks."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from markupsafe import Markup

from easel.accounts import keys, ledger
from easel.api.deps import API_ACCESS_MESSAGE, State
from easel.clock import utcnow
from easel.console import chart
from easel.console.web import ConsoleRoute, FormDep, PersonDep, render, safe_target, see_other
from easel.errors import EaselError
from easel.webhooks import deliveries
from easel.webhooks import endpoints as webhook_endpoints

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
CHART_DAYS = 30


@router.get("/console/")
async def home(who: PersonDep) -> Response:
    return see_other("/console/playground")


@router.get("/console/plans")
async def plans(request: Request, who: PersonDep, state: State) -> Response:
    async with state.db.transaction() as session:
        plan = state.catalog.plans.get(who.account.plan)
        balance = await ledger.balance_with_grant(session, who.account.id, plan, utcnow())
    catalog = state.catalog

    def styles(p: object) -> str:
        models = getattr(p, "models", ())
        if "*" in models:
            return "All styles"
        names = [s for m in models if m in catalog.models for s in catalog.models[m].styles]
        return ", ".join(names) + " only" if names else "none"

    return render(
        request,
        state,
        who.visitor,
        "plans.html",
        plans=list(catalog.plans.values()),
        styles=styles,
        balance=balance,
    )


def _api_note(state: State, plan: str) -> str | None:
    found = state.catalog.plans.get(plan)
    return None if found and found.api_access else API_ACCESS_MESSAGE.format(plan=plan)


async def _keys_page(
    request: Request, who: PersonDep, state: State, status: int = 200, **extra: object
) -> Response:
    async with state.db.transaction(readonly=True) as session:
        rows = await keys.list_keys(session, who.account.id)
    return render(
        request,
        state,
        who.visitor,
        "keys.html",
        status,
        keys=rows,
        api_note=_api_note(state, who.account.plan),
        errors=extra.pop("errors", {}),
        **extra,
    )


@router.get("/console/keys")
async def keys_page(request: Request, who: PersonDep, state: State) -> Response:
    return await _keys_page(request, who, state)


MAX_KEY_NAME = 128


@router.post("/console/keys")
async def create_key(request: Request, form: FormDep, who: PersonDep, state: State) -> Response:
    name = form.get("name", "").strip()
    if not name or len(name) > MAX_KEY_NAME or ":" in name:
        error = (
            f"give the key a name of 1 to {MAX_KEY_NAME} characters without ':', "
            "e.g. where it is used"
        )
        return await _keys_page(request, who, state, 400, errors={"name": error})
    async with state.db.transaction() as session:
        _, plain = await keys.create_key(session, who.account.id, name)
    # Shown once, in this answer only (render sends Cache-Control: no-store): never in a cookie.
    return await _keys_page(request, who, state, new_key=plain, new_key_name=name)


@router.post("/console/keys/{key_id}/revoke")
async def revoke_key(key_id: str, form: FormDep, who: PersonDep, state: State) -> Response:
    async with state.db.transaction() as session:
        await keys.revoke_own_key(session, who.account.id, key_id)
    return see_other("/console/keys")


@router.get("/console/usage")
async def usage(request: Request, who: PersonDep, state: State, page: int = 1) -> Response:
    size = state.settings.console_page_size
    page = max(page, 1)
    now = utcnow()
    async with state.db.transaction() as session:
        plan = state.catalog.plans.get(who.account.plan)
        balance = await ledger.balance_with_grant(session, who.account.id, plan, now)
        rows = await ledger.entries(
            session, who.account.id, limit=size + 1, offset=(page - 1) * size
        )
        days = await ledger.spent_per_day(session, who.account.id, now, CHART_DAYS)
    return render(
        request,
        state,
        who.visitor,
        "usage.html",
        balance=balance,
        rows=rows[:size],
        page=page,
        more=len(rows) > size,
        chart=Markup(chart.bars(days)),
        spent=sum(v for _, v in days),
    )


async def _webhooks_page(
    request: Request, who: PersonDep, state: State, reveal: bool = False, flash: str = ""
) -> Response:
    async with state.db.transaction(readonly=True) as session:
        rows = await deliveries.list_deliveries(
            session, who.account.id, limit=state.settings.console_page_size
        )
        found = await webhook_endpoints.list_endpoints(session, who.account.id)
    return render(
        request,
        state,
        who.visitor,
        "webhooks.html",
        deliveries=rows,
        endpoints=found,
        reveal=reveal,
        flash=flash,
    )


@router.get("/console/webhooks")
async def webhooks(request: Request, who: PersonDep, state: State) -> Response:
    return await _webhooks_page(request, who, state)


@router.post("/console/webhooks/reveal")
async def reveal_secret(request: Request, form: FormDep, who: PersonDep, state: State) -> Response:
    return await _webhooks_page(request, who, state, reveal=True)


@router.post("/console/webhooks/rotate")
async def rotate_secret(request: Request, form: FormDep, who: PersonDep, state: State) -> Response:
    async with state.db.transaction() as session:
        who.account.webhook_secret = await deliveries.rotate_secret(session, who.account.id)
    return await _webhooks_page(
        request,
        who,
        state,
        reveal=True,
        flash="A new signing secret: deliveries from now on use it.",
    )


@router.post("/console/deliveries/{delivery_id}/redeliver")
async def redeliver(
    request: Request, delivery_id: str, form: FormDep, who: PersonDep, state: State
) -> Response:
    try:
        async with state.db.transaction() as session:
            await deliveries.redeliver(session, who.account.id, delivery_id, utcnow())
    except EaselError as exc:
        if exc.status_code == 404:
            raise
        return await _webhooks_page(request, who, state, flash=exc.message)
    back = form.get("back", "")
    return see_other(safe_target(back, "/console/webhooks"))
