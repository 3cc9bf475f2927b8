"""Sign-up, sign-in, sign-out (here or everywhere), password change and reset."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import APIRouter, Request, Response
from sqlalchemy.exc import IntegrityError
from starlette.background import BackgroundTask

from easel.accounts import passwords, sessions, users
from easel.accounts.accounts import create_account
from easel.api.deps import State
from easel.api.state import AppState
from easel.clock import utcnow
from easel.console import limiter, links, mail, tokens
from easel.console.web import (
    SESSION_COOKIE,
    ConsoleRoute,
    FormDep,
    PersonDep,
    VisitorDep,
    render,
    safe_target,
    see_other,
    set_cookie,
)
from easel.errors import Conflict, EaselError, InvalidRequest, RateLimited

log = logging.getLogger(__name__)
router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
# The same words whatever the reason, and no account id.
NOT_MADE = (
    "no new account can be made with this email; if it is yours, sign in or reset the password"
)


def _limited(message: str, param: str) -> RateLimited:
    exc = RateLimited(message)
    exc.param = param
    return exc


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _signed_in(state: AppState, request: Request, user_id: str, target: str) -> Response:
    lifetime = timedelta(days=state.settings.console_session_days)
    async with state.db.transaction() as session:
        token = await sessions.open_session(
            session,
            user_id,
            utcnow(),
            lifetime,
            state.settings.console_max_sessions,
            request.headers.get("user-agent", ""),
        )
    response = see_other(safe_target(target, "/console/"))
    signed = tokens.sign(state.settings.secret_key, "session", token)
    set_cookie(response, state, SESSION_COOKIE, signed, int(lifetime.total_seconds()))
    return response


@router.get("/console/sign-in")
async def sign_in_page(request: Request, who: VisitorDep, state: State, next: str = "") -> Response:
    if who.user:
        return see_other(safe_target(next, "/console/"))
    return render(request, state, who, "sign_in.html", next=next, email="", errors={})


@router.post("/console/sign-in")
async def sign_in(request: Request, form: FormDep, who: VisitorDep, state: State) -> Response:
    email = form.get("email", "").strip().lower()
    refused = await limiter.refused(state, "sign-in", client_ip(request), email)
    status = 429
    if refused is None:
        async with state.db.transaction(readonly=True) as session:
            user = await users.user_by_email(session, email)
            found = await users.user_and_account(session, user.id) if user else None
        hashed = user.password_hash if user else passwords.dummy_hash()
        ok = await passwords.verify_password(hashed, form.get("password", ""), state.password_gate)
        if found is not None and ok:
            await limiter.forget(state, "sign-in", email)
            if found[1].disabled_at is not None:
                refused, status = "this account is disabled; ask the operator of this server", 403
            else:
                return await _signed_in(state, request, found[0].id, form.get("next", ""))
        else:
            log.info("console sign-in refused", extra={"action": "signin_refused"})
    errors = {"password": refused or "wrong email or password; check both, or reset the password"}
    return render(
        request,
        state,
        who,
        "sign_in.html",
        status if refused else 400,
        next=form.get("next", ""),
        email=email,
        errors=errors,
    )


def _signup_closed(state: AppState, invite_email: str | None) -> str | None:
    mode = state.settings.signup
    if mode == "closed":
        return "sign-up is closed on this server; ask the operator for an account"
    if mode == "invite" and invite_email is None:
        return "sign-up needs an invite link on this server; ask the operator for one"
    return None


@router.get("/console/sign-up")
async def sign_up_page(
    request: Request, who: VisitorDep, state: State, invite: str = ""
) -> Response:
    invited = links.invited_email(state.settings, invite)
    return render(
        request,
        state,
        who,
        "sign_up.html",
        closed=_signup_closed(state, invited),
        invite=invite,
        invite_email=invited,
        email=invited or "",
        errors={},
    )


@router.post("/console/sign-up")
async def sign_up(request: Request, form: FormDep, who: VisitorDep, state: State) -> Response:
    invite = form.get("invite", "")
    invited = links.invited_email(state.settings, invite)
    closed = _signup_closed(state, invited)
    email = invited or form.get("email", "")
    errors: dict[str, str] = {}
    status = 403 if closed else 400
    if closed is None:
        try:
            email = users.normal_email(email)
            password = passwords.check_new_password(form.get("password", ""))
            refused = await limiter.refused(state, "sign-up", client_ip(request), email)
            if refused:
                raise _limited(refused, "email")
            hashed = await passwords.hash_password(password, state.password_gate)
            try:
                async with state.db.transaction() as session:
                    account = await create_account(
                        session, state.catalog, email, state.settings.signup_plan
                    )
                    user = await users.create_user(session, account.id, email, hashed, utcnow())
            except (Conflict, IntegrityError):  # IntegrityError: the same email at once
                raise InvalidRequest(NOT_MADE, param="email") from None
            return await _signed_in(state, request, user.id, "/console/")
        except EaselError as exc:
            errors[exc.param or "email"] = exc.message
            status = 429 if isinstance(exc, RateLimited) else 400
    return render(
        request,
        state,
        who,
        "sign_up.html",
        status,
        closed=closed,
        invite=invite,
        invite_email=invited,
        email=email,
        errors=errors,
    )


@router.post("/console/sign-out")
async def sign_out(form: FormDep, who: VisitorDep, state: State) -> Response:
    if who.token:
        async with state.db.transaction() as session:
            await sessions.close_session(session, who.token)
    response = see_other("/console/sign-in")
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


@router.post("/console/sign-out-everywhere")
async def sign_out_everywhere(form: FormDep, who: PersonDep, state: State) -> Response:
    async with state.db.transaction() as session:
        await sessions.close_all(session, who.user.id)
    response = see_other("/console/sign-in")
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


@router.get("/console/account")
async def account_page(request: Request, who: PersonDep, state: State) -> Response:
    async with state.db.transaction(readonly=True) as session:
        count = await sessions.count_sessions(session, who.user.id, utcnow())
    return render(request, state, who.visitor, "account.html", session_count=count, errors={})


@router.post("/console/account/password")
async def change_password(
    request: Request, form: FormDep, who: PersonDep, state: State
) -> Response:
    errors: dict[str, str] = {}
    status = 400
    refused = await limiter.refused(state, "password", client_ip(request), who.user.email)
    if refused:
        errors["current"], status = refused, 429
    elif not await passwords.verify_password(
        who.user.password_hash, form.get("current", ""), state.password_gate
    ):
        errors["current"] = "this is not the current password"
    else:
        try:
            hashed = await passwords.hash_password(
                passwords.check_new_password(form.get("password", "")), state.password_gate
            )
            async with state.db.transaction() as session:
                user = await users.get_user(session, who.user.id)
                await users.set_password_hash(session, user, hashed, utcnow())
            return await _signed_in(state, request, who.user.id, "/console/account")
        except EaselError as exc:
            errors[exc.param or "password"] = exc.message
    async with state.db.transaction(readonly=True) as session:
        count = await sessions.count_sessions(session, who.user.id, utcnow())
    return render(
        request, state, who.visitor, "account.html", status, session_count=count, errors=errors
    )


@router.get("/console/forgot")
async def forgot_page(request: Request, who: VisitorDep, state: State) -> Response:
    return render(request, state, who, "forgot.html", sent=None, errors={})


@router.post("/console/forgot")
async def forgot(request: Request, form: FormDep, who: VisitorDep, state: State) -> Response:
    email = form.get("email", "").strip().lower()
    refused = await limiter.refused(state, "forgot", client_ip(request), email)
    if refused:
        return render(request, state, who, "forgot.html", 429, sent=None, errors={"email": refused})
    async with state.db.transaction(readonly=True) as session:
        user = await users.user_by_email(session, email)
    later = None
    if state.settings.smtp_url:
        if user is not None:  # sent after the answer: a known email answers as fast as any
            link = links.reset_link(state.settings, user)
            later = BackgroundTask(mail.deliver_reset_link, state.settings, user.email, link)
        sent = f"If {email} has a sign-in here, a reset link is on its way to it."
    else:
        sent = (
            "This server sends no email. Ask the operator for a reset link "
            f"(`easel accounts reset-link --email {email}`)."
        )
    response = render(request, state, who, "forgot.html", sent=sent, errors={})
    response.background = later
    return response


@router.get("/console/reset")
async def reset_page(request: Request, who: VisitorDep, state: State, token: str = "") -> Response:
    return render(request, state, who, "reset.html", token=token, errors={})


@router.post("/console/reset")
async def reset(request: Request, form: FormDep, who: VisitorDep, state: State) -> Response:
    token = form.get("token", "")
    status = 400
    try:
        async with state.db.transaction(readonly=True) as session:
            user = await links.user_of_reset(session, state.settings, token)
        refused = await limiter.refused(state, "reset", client_ip(request), user.email)
        if refused:
            raise _limited(refused, "password")
        hashed = await passwords.hash_password(
            passwords.check_new_password(form.get("password", "")), state.password_gate
        )
        async with state.db.transaction() as session:
            user = await links.user_of_reset(session, state.settings, token)  # not used meanwhile
            await users.set_password_hash(session, user, hashed, utcnow())
        return await _signed_in(state, request, user.id, "/console/")
    except EaselError as exc:
        errors = {exc.param or "password": exc.message}
        status = 429 if isinstance(exc, RateLimited) else 400
    return render(request, state, who, "reset.html", status, token=token, errors=errors)
