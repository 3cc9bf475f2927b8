"""The console over HTTP in-process on SQLite (none of this depends on the database): the account
forms against parallel and repeated attempts, sessions, keys, headers, quotes and charges."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from easel.accounts import ledger, passwords, users
from easel.accounts.accounts import create_account, find_account, set_disabled
from easel.catalog.pricing import price
from easel.clock import utcnow
from easel.config import Settings
from easel.dialects import console as console_dialect
from easel.dialects.common import place
from tests.support import databases
from tests.support.app import app_client, free_port, new_account

pytestmark = pytest.mark.anyio
PASSWORD = "long enough password"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return databases.sqlite_url(tmp_path)


async def form_token(http: httpx.AsyncClient, path: str = "/console/forgot") -> str:
    found = re.search(r'"X-CSRF-Token": "([^"]+)"', (await http.get(path)).text)
    assert found
    return found.group(1)


async def sign_up(http: httpx.AsyncClient, email: str) -> httpx.Response:
    data = {"csrf_token": await form_token(http), "email": email, "password": PASSWORD}
    return await http.post("/console/sign-up", data=data)


@pytest.fixture
async def clients(
    settings: Settings, rate_limit_storage: str
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two API processes' apps (one with memory storage: processes cannot share it)."""
    settings = settings.model_copy(
        update={
            "rate_limit_storage": rate_limit_storage,
            "rate_limit_prefix": f"test-{uuid.uuid4().hex}:",
            "signin_attempts_per_email": 3,
        }
    )
    async with AsyncExitStack() as stack:
        out = []
        for _ in range(2 if rate_limit_storage else 1):
            client, _state = await stack.enter_async_context(app_client(settings))
            out.append(client)
        yield out


async def test_parallel_wrong_sign_ins_reach_the_password_check_at_most_the_limit(
    clients: list[httpx.AsyncClient],
) -> None:
    assert (await sign_up(clients[0], "target@example.com")).status_code == 303
    tokens = [await form_token(http) for http in clients]

    async def attempt(i: int) -> int:
        http = clients[i % len(clients)]
        data = {"csrf_token": tokens[i % len(clients)], "email": "target@example.com"}
        response = await http.post("/console/sign-in", data=data | {"password": f"wrong {i}"})
        return response.status_code

    codes = Counter(await asyncio.gather(*(attempt(i) for i in range(10))))
    assert codes == {400: 3, 429: 7}, codes
    right = {"csrf_token": tokens[0], "email": "target@example.com", "password": PASSWORD}
    refused = await clients[0].post("/console/sign-in", data=right)
    assert refused.status_code == 429 and "too many sign-in attempts" in refused.text


async def test_reset_checks_its_link_first_and_every_password_form_is_limited(
    settings: Settings,
) -> None:
    settings = settings.model_copy(
        update={"account_attempts_per_ip": 2, "account_attempts_per_email": 2}
    )
    async with app_client(settings) as (http, _):
        token = await form_token(http)
        bad = {"csrf_token": token, "token": "forged", "password": "short"}
        reset = await http.post("/console/reset", data=bad)  # the link, before the password
        assert reset.status_code == 400 and "unknown, used or expired" in reset.text
        codes = []
        for i in range(3):
            data = {"csrf_token": await form_token(http), "email": f"s{i}@example.com"}
            data["password"] = PASSWORD
            codes.append((await http.post("/console/sign-up", data=data)).status_code)
        assert codes == [303, 303, 429]  # per address
        async with app_client(settings) as (other, _):  # another address's count: same email
            token = await form_token(other)
            forgot = [
                await other.post("/console/forgot", data={"csrf_token": token, "email": "x@y.z"})
                for _ in range(3)
            ]
        assert [f.status_code for f in forgot] == [200, 200, 429]
        assert "too many reset requests" in forgot[2].text
        token = await form_token(http, "/console/account")
        wrong = {"csrf_token": token, "current": "not it", "password": "another long one"}
        changes = [await http.post("/console/account/password", data=wrong) for _ in range(3)]
        assert [c.status_code for c in changes] == [400, 400, 429]
        assert "signed in on 1 browser(s)" in changes[0].text  # not 0


async def test_a_reset_email_that_cannot_be_sent_is_logged_not_a_500(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"smtp://127.0.0.1:{free_port()}"  # nothing listens there
    async with app_client(settings.model_copy(update={"smtp_url": dead})) as (http, _):
        assert (await sign_up(http, "known@example.com")).status_code == 303
        async with app_client(settings.model_copy(update={"smtp_url": dead})) as (other, _):
            token = await form_token(other)
            for email in ("known@example.com", "unknown@example.com"):
                sent = await other.post(
                    "/console/forgot", data={"csrf_token": token, "email": email}
                )
                assert sent.status_code == 200 and "a reset link is on its way" in sent.text
    failed = [r for r in caplog.records if getattr(r, "action", "") == "reset_mail_failed"]
    assert len(failed) == 1  # the known email's only


async def test_disabling_an_account_signs_its_people_out_for_good(settings: Settings) -> None:
    async with app_client(settings) as (http, state):
        assert (await sign_up(http, "gone@example.com")).status_code == 303
        for disabled in (True, False):
            async with state.db.transaction() as session:
                account = await find_account(session, "gone@example.com")
                await set_disabled(session, account, disabled)
        page = await http.get("/console/account")  # enabled again: the old sign-in stays ended
        assert page.status_code == 303 and "sign-in" in page.headers["location"]


async def test_a_new_api_key_is_shown_in_the_answer_only(settings: Settings) -> None:
    async with app_client(settings) as (http, _):
        assert (await sign_up(http, "keys@example.com")).status_code == 303
        data = {"csrf_token": await form_token(http), "name": "laptop"}
        made = await http.post("/console/keys", data=data)
        assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
        found = re.search(r'id="new-key" readonly value="([^"]+)"', made.text)
        assert found and "set-cookie" not in made.headers
        assert found.group(1) not in (await http.get("/console/keys")).text


async def test_console_pages_refuse_frames_referrers_and_sniffing(settings: Settings) -> None:
    async with app_client(settings) as (http, _):
        for path in ("/console/reset?token=abc", "/console/usage", "/console/orders/x"):
            headers = (await http.get(path)).headers
            assert headers["x-frame-options"] == "DENY", path
            assert headers["content-security-policy"] == "frame-ancestors 'none'"
            assert headers["referrer-policy"] == "no-referrer"
            assert headers["x-content-type-options"] == "nosniff"


async def test_the_playground_quote_is_the_debit_with_the_plans_enhance_credits(
    settings: Settings,
) -> None:
    async with app_client(settings) as (_, state):
        plan = state.catalog.plans["standard"]
        state.catalog.plans["standard"] = dataclasses.replace(plan, enhance_credits=3)
        account, _key = await new_account(state, "standard", topup=10_000)
        form = {"style": "general", "prompt": "a lighthouse", "llm_enhance": "on"}
        req = console_dialect.to_request(state, form)
        quoted = console_dialect.quote(state, account, req)
        assert quoted == price(req) + 3
        order, _ = await place(state, account, req)
        async with state.db.transaction(readonly=True) as session:
            rows = await ledger.entries(session, account.id, limit=10, offset=0)
        assert [r.amount for r in rows if r.kind == "debit"] == [-quoted] == [-order.cost_credits]


async def test_a_playground_form_sent_twice_places_and_charges_one_order(
    settings: Settings,
) -> None:
    async with app_client(settings) as (http, state):
        assert (await sign_up(http, "twice@example.com")).status_code == 303
        page = (await http.get("/console/playground")).text
        nonce = re.search(r'name="nonce" value="([^"]+)"', page)
        assert nonce
        form = {"csrf_token": await form_token(http), "nonce": nonce.group(1)}
        form |= {"style": "turbo", "product_type": "static_image", "prompt": "a boat"}
        sent = await asyncio.gather(*(http.post("/console/playground", data=form) for _ in "ab"))
        assert [s.status_code for s in sent] == [303, 303]
        assert sent[0].headers["location"] == sent[1].headers["location"]
        async with state.db.transaction(readonly=True) as session:
            account = await find_account(session, "twice@example.com")
            rows = await ledger.entries(session, account.id, limit=10, offset=0)
        assert len([r for r in rows if r.kind == "debit"]) == 1


async def test_a_grant_of_unicode_digits_is_a_400(settings: Settings) -> None:
    async with app_client(settings) as (http, state):
        hashed = await passwords.hash_password(PASSWORD)
        async with state.db.transaction() as session:
            admin = await create_account(
                session, state.catalog, "boss@example.com", "mega", is_admin=True
            )
            await users.create_user(session, admin.id, "boss@example.com", hashed, utcnow())
        data = {"csrf_token": await form_token(http), "email": "boss@example.com"}
        signed = await http.post("/console/sign-in", data=data | {"password": PASSWORD})
        assert signed.status_code == 303
        grant = {"csrf_token": await form_token(http), "credits": "²", "reason": "test"}
        sent = await http.post(f"/console/admin/accounts/{admin.id}/grant", data=grant)
        assert sent.status_code == 400 and "whole number from 1" in sent.text


async def test_the_older_link_of_history_keeps_filters_with_any_characters(
    settings: Settings,
) -> None:
    async with app_client(settings.model_copy(update={"console_page_size": 1})) as (http, state):
        assert (await sign_up(http, "pages@example.com")).status_code == 303
        async with state.db.transaction(readonly=True) as session:
            account = await find_account(session, "pages@example.com")
        for prompt in ("first-lighthouse", "second-lighthouse"):
            form = {"style": "turbo", "prompt": prompt}
            await place(state, account, console_dialect.to_request(state, form))
        first = await http.get("/console/history", params={"from": "2000-01-01T00:00+00:00"})
        older = re.search(r'rel="next" href="([^"]+)"', first.text)
        assert first.status_code == 200 and older
        second = await http.get("/console/history" + html.unescape(older.group(1)))
        assert second.status_code == 200 and "first-lighthouse" in second.text
        assert "second-lighthouse" not in second.text and "second-lighthouse" in first.text
