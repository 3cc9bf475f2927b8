"""Steps the console tests share: signing up and in through the pages."""

from __future__ import annotations

import re
import time

from playwright.sync_api import Page, expect

from easel.accounts import accounts
from easel.accounts.accounts import find_account
from tests.console.conftest import PASSWORD
from tests.support.live import Live


def new_email(tag: str) -> str:
    return f"{tag}-{time.monotonic_ns()}@example.com"


def sign_up(page: Page, email: str, password: str = PASSWORD) -> None:
    page.goto("/console/sign-up")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Create the account").click()
    expect(page).to_have_url(re.compile(r"/console/playground$"))


def sign_in(page: Page, email: str, password: str = PASSWORD) -> None:
    page.goto("/console/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).not_to_have_url(re.compile(r"/sign-in"))


def create_key(page: Page, name: str) -> str:
    page.goto("/console/keys")
    page.get_by_label("Name of a new key").fill(name)
    page.get_by_role("button", name="Create a key").click()
    return page.locator("#new-key").input_value()


def set_plan(live: Live, email: str, plan: str) -> None:
    """Looking behind the pages: move the account of `email` to `plan`."""

    async def move() -> None:
        async with live.state.db.transaction() as session:
            account = await find_account(session, email)
            await accounts.set_plan(session, live.state.catalog, account, plan)

    live.loop.call(move())
