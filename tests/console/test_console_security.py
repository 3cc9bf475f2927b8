"""Who may see and do what in the console: CSRF, another account's order, sessions ended
everywhere, sign-in attempts, a password reset by email."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.console.conftest import PASSWORD, Inbox, shot
from tests.console.helpers import create_key, new_email, sign_in, sign_up
from tests.console.test_console_flows import generate_in_playground
from tests.support.live import Live

pytestmark = pytest.mark.slow


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    page: Page, console: Live
) -> None:
    sign_up(page, new_email("csrf"))
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=console.base_url, cookies=cookies) as http:
        refused = http.post("/console/keys", data={"name": "sneaky"})
        assert refused.status_code == 403
        assert "CSRF token" in refused.text
        forged = http.post("/console/keys", data={"name": "sneaky", "csrf_token": "forged"})
        assert forged.status_code == 403
        assert "sneaky" not in http.get("/console/keys").text
        token = re.search(r'"X-CSRF-Token": "([^"]+)"', http.get("/console/keys").text)
        assert token is not None  # as htmx sends it: a header instead of a form field
        sent = http.post(
            "/console/keys", data={"name": "by htmx"}, headers={"X-CSRF-Token": token.group(1)}
        )
        assert sent.status_code == 200 and 'id="new-key"' in sent.text  # shown in the answer
    page.goto("/console/keys")
    expect(page.get_by_role("cell", name="by htmx", exact=True)).to_be_visible()
    expect(page.get_by_role("cell", name="sneaky")).to_have_count(0)


def test_another_accounts_session_cannot_open_the_order_page(
    page: Page, browser: Browser, console: Live
) -> None:
    sign_up(page, new_email("owner"))
    order_id = generate_in_playground(page, "a private picture")
    expect(page.locator("#outputs img")).to_be_visible()
    create_key(page, "owner's")
    revoke = page.locator("form[action$='/revoke']").get_attribute("action") or ""
    other = browser.new_context(base_url=console.base_url)
    try:
        intruder = other.new_page()
        sign_up(intruder, new_email("intruder"))
        for path in (f"/console/orders/{order_id}", f"/console/orders/{order_id}/events"):
            answer = intruder.goto(path)
            assert answer is not None and answer.status == 404, path
        expect(intruder.get_by_role("heading", name="Not found")).to_be_visible()
        intruder.goto("/console/history")
        expect(intruder.locator(f'a[href="/console/orders/{order_id}"]')).to_have_count(0)
        admin_page = intruder.goto("/console/admin/accounts")
        assert admin_page is not None and admin_page.status == 404
        headers = json.loads(intruder.locator("body").get_attribute("hx-headers") or "{}")
        token = headers["X-CSRF-Token"]  # the intruder's own, valid token
        order = f"/console/orders/{order_id}"
        for path in (revoke, f"{order}/cancel", f"{order}/again"):
            answer = intruder.request.post(path, form={"csrf_token": token})
            assert answer.status == 404, path
    finally:
        other.close()
    page.goto("/console/keys")
    expect(page.get_by_role("button", name="Revoke owner's")).to_be_visible()  # still there


def test_sign_out_everywhere_ends_an_open_session(
    page: Page, browser: Browser, console: Live
) -> None:
    email = new_email("everywhere")
    sign_up(page, email)
    laptop = browser.new_context(base_url=console.base_url)
    try:
        second = laptop.new_page()
        sign_in(second, email)
        second.goto("/console/usage")
        expect(second.get_by_role("heading", name="Usage")).to_be_visible()
        page.goto("/console/account")
        expect(page.get_by_text("signed in on 2 browser(s)")).to_be_visible()
        shot(page, "account")
        page.get_by_role("button", name="Sign out everywhere").click()
        expect(page).to_have_url(re.compile(r"/console/sign-in"))
        second.goto("/console/usage")
        expect(second).to_have_url(re.compile(r"/console/sign-in\?next=/console/usage"))
    finally:
        laptop.close()


def test_sign_in_attempts_are_limited_and_a_reset_link_comes_by_email(
    page: Page, console: Live, inbox: Inbox
) -> None:
    email = new_email("forgetful")
    sign_up(page, email)
    page.context.clear_cookies()
    page.goto("/console/sign-in")  # the first attempt with the keyboard alone
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Skip to the content")
    for _ in range(2):  # the brand link, then the email field
        page.keyboard.press("Tab")
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    page.keyboard.type("not the password")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("wrong email or password")
    for _ in range(2):
        page.goto("/console/sign-in")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("wrong email or password")
    shot(page, "sign-in")
    page.get_by_label("Password").fill(PASSWORD)  # right, but too late
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("too many sign-in attempts for this email")

    page.goto("/console/forgot")
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Send a reset link").click()
    expect(page.get_by_role("status")).to_contain_text("reset link is on its way")
    mail = next(m for m in reversed(inbox.messages) if m["To"] == email)
    link = re.search(
        r"http://\S+/console/reset\?token=\S+", mail.get_payload(decode=True).decode()
    ).group(0)
    page.goto(link)
    page.get_by_label("New password").fill("a brand new password")
    page.get_by_role("button", name="Set the password").click()
    expect(page).to_have_url(re.compile(r"/console/playground$"))
    page.goto(link)  # used: the password changed since it was made
    page.get_by_label("New password").fill("yet another password")
    page.get_by_role("button", name="Set the password").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown, used or expired")
