"""What every console page shares: templates, the signed-in visitor, CSRF, error pages."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from easel.accounts import sessions, users
from easel.api.deps import State
from easel.api.state import AppState
from easel.clock import utcnow
from easel.console import tokens
from easel.db.tables import Account, ConsoleUser
from easel.errors import EaselError, Forbidden, NotFound

HERE = Path(__file__).parent
SESSION_COOKIE = "easel_session"
ANON_COOKIE = "easel_visitor"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
HTMX_VERSION = "2.0.4"

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


class SignInRequired(Exception):
    """The page needs a signed-in visitor."""


class CsrfRefused(Forbidden):
    """This form was sent without its CSRF token (or with another page's): reload the page and
    send it again."""


@dataclass
class Visitor:
    """Whoever asks: a signed-in person (`user`, `account`) or nobody; `holder` keys the CSRF."""

    holder: str
    token: str | None = None
    user: ConsoleUser | None = None
    account: Account | None = None
    new_anon: bool = False

    def csrf(self, state: AppState) -> str:
        return tokens.csrf_token(state.settings.secret_key, self.holder)


async def visitor(request: Request, state: State) -> Visitor:
    secret = state.settings.secret_key
    signed = request.cookies.get(SESSION_COOKIE, "")
    token = tokens.unsign(secret, "session", signed) if signed else None
    if token:
        async with state.db.transaction(readonly=True) as session:
            user_id = await sessions.session_user(session, token, utcnow())
            found = await users.user_and_account(session, user_id) if user_id else None
        if found and found[1].disabled_at is None:
            return Visitor(holder=token, token=token, user=found[0], account=found[1])
    anon = tokens.unsign(secret, "visitor", request.cookies.get(ANON_COOKIE, ""))
    if anon:
        return Visitor(holder="anon:" + anon)
    return Visitor(holder="anon:" + secrets.token_urlsafe(16), new_anon=True)


VisitorDep = Annotated[Visitor, Depends(visitor)]


@dataclass
class Person:
    user: ConsoleUser
    account: Account
    visitor: Visitor


async def person(who: VisitorDep) -> Person:
    if who.user is None or who.account is None:
        raise SignInRequired()
    return Person(who.user, who.account, who)


async def admin(who: Annotated[Person, Depends(person)]) -> Person:
    if not who.account.is_admin:
        raise NotFound("no such page")
    return who


PersonDep = Annotated[Person, Depends(person)]
AdminDep = Annotated[Person, Depends(admin)]


async def checked_form(request: Request, who: VisitorDep, state: State) -> dict[str, str]:
    """The posted form, once its CSRF token (field or htmx header) matches the visitor's."""
    form = await request.form()
    sent = str(form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or "")
    if not tokens.csrf_ok(state.settings.secret_key, who.holder, sent):
        raise CsrfRefused()
    return {k: v for k, v in form.items() if isinstance(v, str)}


FormDep = Annotated[dict[str, str], Depends(checked_form)]


def set_cookie(response: Response, state: AppState, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/console",
        httponly=True,
        samesite="lax",
        secure=state.settings.environment != "development",
    )


def render(
    request: Request,
    state: AppState,
    who: Visitor,
    template: str,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    account = who.account
    page = templates.get_template(template).render(
        request=request,
        user=who.user,
        account=account,
        csrf=who.csrf(state),
        csrf_field=CSRF_FIELD,
        settings=state.settings,
        htmx_version=HTMX_VERSION,
        **context,
    )
    response = HTMLResponse(page, status_code=status_code)
    response.headers["cache-control"] = "no-store"
    if who.new_anon:
        signed = tokens.sign(state.settings.secret_key, "visitor", who.holder.removeprefix("anon:"))
        set_cookie(response, state, ANON_COOKIE, signed, 86400)
    return response


def safe_target(target: str, default: str) -> str:
    """`target` when it is a console path of this site (never another host's), else `default`."""
    local = target.startswith("/console/") and "//" not in target and "\\" not in target
    return target if local else default


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# Never in a frame (clickjacking); no Referer (reset links carry their token); no type sniffing.
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class ConsoleRoute(APIRoute):
    """Errors as HTML pages in the console's layout (or a sign-in redirect), not JSON; every
    answer with SECURITY_HEADERS."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            response = await answer(request)
            response.headers.update(SECURITY_HEADERS)
            return response

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                target = "/console/sign-in?next=" + request.url.path
                if request.headers.get("hx-request"):
                    return Response(status_code=204, headers={"HX-Redirect": target})
                return see_other(target)
            except EaselError as exc:
                state: AppState = request.app.state.easel
                who = await visitor(request, state)
                return render(
                    request, state, who, "error.html", status_code=exc.status_code, error=exc
                )

        return run
