"""Who may sign up (EASEL_SIGNUP open / invite / closed) and the session it gets, over HTTP on a
real server, on both databases: no browser needed for forms and cookies."""

from __future__ import annotations

import re

import httpx
import pytest

from easel.accounts.accounts import find_account
from easel.config import Settings
from easel.console.links import invite_link
from tests.support.app import serving

pytestmark = pytest.mark.anyio
PASSWORD = "long enough password"


async def form_token(http: httpx.AsyncClient, path: str) -> str:
    page = await http.get(path)
    found = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)  # every page carries it
    assert found, page.text
    return found.group(1)


async def sign_up(http: httpx.AsyncClient, email: str, invite: str = "") -> httpx.Response:
    token = await form_token(http, f"/console/sign-up?invite={invite}")
    data = {"csrf_token": token, "email": email, "password": PASSWORD, "invite": invite}
    return await http.post("/console/sign-up", data=data)


@pytest.mark.parametrize("mode", ["open", "invite", "closed"])
async def test_sign_up_modes(settings: Settings, mode: str) -> None:
    settings = settings.model_copy(update={"signup": mode})
    async with serving(settings) as (state, base), httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/")).headers["location"] == "/console/"
        plain = await sign_up(http, "plain@example.com")
        if mode == "open":
            assert plain.status_code == 303 and plain.headers["location"] == "/console/"
            cookie = plain.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
            account = await http.get("/console/account")
            assert "plain@example.com" in account.text and "<strong>free</strong>" in account.text
        else:
            assert plain.status_code == 403
            assert ("invite link" if mode == "invite" else "sign-up is closed") in plain.text
        if mode == "invite":
            link = invite_link(state.settings, "Invited@Example.com")
            token = link.split("invite=")[1]
            taken = await sign_up(http, "someone-else@example.com", invite=token)
            assert taken.status_code == 303
            async with state.db.transaction(readonly=True) as session:
                account = await find_account(session, "invited@example.com")  # not the form's
            assert account.plan == "free"
            async with httpx.AsyncClient(base_url=base) as other:
                again = await sign_up(other, "x@example.com", invite=token)
            assert again.status_code == 400 and "no new account can be made" in again.text
            assert account.id not in again.text and "already exists" not in again.text


async def test_weak_passwords_and_bad_emails_are_refused_beside_their_field(
    settings: Settings,
) -> None:
    async with serving(settings) as (_, base), httpx.AsyncClient(base_url=base) as http:
        token = await form_token(http, "/console/sign-up")
        short = await http.post(
            "/console/sign-up",
            data={"csrf_token": token, "email": "a@example.com", "password": "short"},
        )
        assert short.status_code == 400
        assert 'id="e-password"' in short.text and "use at least 10" in short.text
        bad = await http.post(
            "/console/sign-up",
            data={"csrf_token": token, "email": "not-an-email", "password": PASSWORD},
        )
        assert bad.status_code == 400 and 'id="e-email"' in bad.text
        page = await http.get("/console/usage")
        assert page.status_code == 303 and "sign-in" in page.headers["location"]
        unknown = await http.post(
            "/console/sign-in",
            data={"csrf_token": token, "email": "nobody@example.com", "password": PASSWORD},
        )
        assert unknown.status_code == 400 and "wrong email or password" in unknown.text


async def test_one_person_keeps_at_most_the_newest_sessions(settings: Settings) -> None:
    settings = settings.model_copy(update={"console_max_sessions": 2})
    async with serving(settings) as (_, base):
        browsers = [httpx.AsyncClient(base_url=base) for _ in range(3)]
        try:
            assert (await sign_up(browsers[0], "many@example.com")).status_code == 303
            for http in browsers[1:]:
                token = await form_token(http, "/console/sign-in")
                data = {"csrf_token": token, "email": "many@example.com", "password": PASSWORD}
                assert (await http.post("/console/sign-in", data=data)).status_code == 303
            pages = [await http.get("/console/account") for http in browsers]
            assert [p.status_code for p in pages] == [303, 200, 200]  # the oldest signed out
            assert "signed in on 2 browser(s)" in pages[2].text
        finally:
            for http in browsers:
                await http.aclose()
