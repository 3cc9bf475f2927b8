"""Admin pages (admin accounts only; anyone else gets 404): accounts, queue, workers, failing
webhooks, the catalog as loaded."""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi import APIRouter, Request, Response

from easel.accounts import ledger
from easel.accounts.accounts import get_account, search_accounts, set_disabled, set_plan
from easel.api.deps import State
from easel.clock import utcnow
from easel.console import links
from easel.console.web import AdminDep, ConsoleRoute, FormDep, render, see_other
from easel.errors import InvalidRequest
from easel.orders import stats
from easel.webhooks import endpoints
from easel.worker import presence

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
MAX_GRANT = 1_000_000
MAX_REASON = 200


async def _accounts_page(
    request: Request,
    who: AdminDep,
    state: State,
    q: str = "",
    errors: dict[str, str] | None = None,
    invite: str | None = None,
) -> Response:
    async with state.db.transaction(readonly=True) as session:
        found = await search_accounts(session, q, state.settings.console_page_size)
    return render(
        request,
        state,
        who.visitor,
        "admin_accounts.html",
        400 if errors else 200,
        found=found,
        q=q,
        errors=errors or {},
        invite=invite,
    )


@router.get("/console/admin/accounts")
async def accounts(request: Request, who: AdminDep, state: State, q: str = "") -> Response:
    return await _accounts_page(request, who, state, q)


@router.post("/console/admin/invite")
async def invite(request: Request, form: FormDep, who: AdminDep, state: State) -> Response:
    """A sign-up link for one email (what EASEL_SIGNUP=invite asks for)."""
    try:
        link = links.invite_link(state.settings, form.get("email", ""))
    except InvalidRequest as exc:
        return await _accounts_page(request, who, state, errors={"email": exc.message})
    return await _accounts_page(request, who, state, invite=link)


async def _account_page(
    request: Request,
    who: AdminDep,
    state: State,
    account_id: str,
    status: int = 200,
    errors: dict[str, str] | None = None,
    flash: str = "",
) -> Response:
    async with state.db.transaction() as session:
        target = await get_account(session, account_id)
        plan = state.catalog.plans.get(target.plan)
        balance = await ledger.balance_with_grant(session, target.id, plan, utcnow())
        recent = await ledger.entries(session, target.id, limit=10, offset=0)
    return render(
        request,
        state,
        who.visitor,
        "admin_account.html",
        status,
        target=target,
        balance=balance,
        recent=recent,
        plans=list(state.catalog.plans),
        errors=errors or {},
        flash=flash,
    )


@router.get("/console/admin/accounts/{account_id}")
async def account(request: Request, account_id: str, who: AdminDep, state: State) -> Response:
    return await _account_page(request, who, state, account_id)


@router.post("/console/admin/accounts/{account_id}/plan")
async def change_plan(
    request: Request, account_id: str, form: FormDep, who: AdminDep, state: State
) -> Response:
    try:
        async with state.db.transaction() as session:
            target = await get_account(session, account_id)
            await set_plan(session, state.catalog, target, form.get("plan", ""))
    except InvalidRequest as exc:
        return await _account_page(request, who, state, account_id, 400, {"plan": exc.message})
    return see_other(f"/console/admin/accounts/{account_id}")


@router.post("/console/admin/accounts/{account_id}/grant")
async def grant(
    request: Request, account_id: str, form: FormDep, who: AdminDep, state: State
) -> Response:
    errors: dict[str, str] = {}
    text = form.get("credits", "").strip()
    reason = form.get("reason", "").strip()
    amount = int(text) if re.fullmatch(r"[0-9]{1,9}", text) else 0  # not isdigit(): '²'
    if not 0 < amount <= MAX_GRANT:
        errors["credits"] = f"credits must be a whole number from 1 to {MAX_GRANT}"
    if not reason or len(reason) > MAX_REASON:
        errors["reason"] = f"say why, in 1 to {MAX_REASON} characters (it goes in the ledger)"
    if errors:
        return await _account_page(request, who, state, account_id, 400, errors)
    try:
        async with state.db.transaction() as session:
            target = await get_account(session, account_id)
            note = f"granted by {who.user.email}: {reason}"
            await ledger.top_up(session, target.id, amount, utcnow(), note)
    except InvalidRequest as exc:
        return await _account_page(request, who, state, account_id, 400, {"credits": exc.message})
    return see_other(f"/console/admin/accounts/{account_id}")


@router.post("/console/admin/accounts/{account_id}/disable")
async def disable(
    request: Request, account_id: str, form: FormDep, who: AdminDep, state: State
) -> Response:
    disabled = form.get("disabled", "1") == "1"
    if disabled and account_id == who.account.id:
        flash = "you cannot disable your own account (you would be signed out of the console)"
        return await _account_page(request, who, state, account_id, 400, flash=flash)
    async with state.db.transaction() as session:
        await set_disabled(session, await get_account(session, account_id), disabled)
    return see_other(f"/console/admin/accounts/{account_id}")


@router.get("/console/admin/queue")
async def queue_page(request: Request, who: AdminDep, state: State) -> Response:
    async with state.db.transaction(readonly=True) as session:
        pending, running = await stats.open_orders(session, 100)
    return render(
        request,
        state,
        who.visitor,
        "admin_queue.html",
        pending=pending,
        running=running,
        now=utcnow(),
    )


@router.get("/console/admin/workers")
async def workers_page(request: Request, who: AdminDep, state: State) -> Response:
    now = utcnow()
    heartbeat = timedelta(seconds=state.settings.worker_heartbeat_seconds)
    async with state.db.transaction(readonly=True) as session:
        found = await presence.list_workers(session, now - timedelta(days=1))
    rows = [(w, presence.is_online(w, now, heartbeat)) for w in found]
    return render(request, state, who.visitor, "admin_workers.html", workers=rows, now=now)


@router.get("/console/admin/webhooks")
async def webhooks_page(request: Request, who: AdminDep, state: State) -> Response:
    async with state.db.transaction(readonly=True) as session:
        failing = await endpoints.failing_endpoints(session, 100)
    return render(request, state, who.visitor, "admin_webhooks.html", failing=failing)


@router.get("/console/admin/catalog")
async def catalog_page(request: Request, who: AdminDep, state: State) -> Response:
    return render(request, state, who.visitor, "admin_catalog.html", catalog=state.catalog)
