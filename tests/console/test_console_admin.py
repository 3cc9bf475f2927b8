"""The operator's pages: an admin account signs in once `easel accounts set-password` gave it a
password, grants credits, changes a plan and disables an account, whose key stops at once."""

from __future__ import annotations

import concurrent.futures
import re

import httpx
import pytest
from click.testing import CliRunner
from playwright.sync_api import Browser, Page, expect

from easel.accounts.accounts import create_account
from easel.cli import main
from easel.config import get_settings
from tests.console.conftest import PASSWORD, shot
from tests.console.helpers import create_key, new_email, set_plan, sign_in, sign_up
from tests.support.live import Live

pytestmark = pytest.mark.slow
ADMIN_PASSWORD = "the operator's password"


def easel_cli(live: Live, monkeypatch: pytest.MonkeyPatch, *args: str, stdin: str = "") -> str:
    """`easel ARGS` against the live server's database, in a thread: Playwright's loop runs in
    this one, and the command runs its own."""
    s = live.settings
    for name, value in (
        ("EASEL_DATABASE_URL", s.database_url),
        ("EASEL_CATALOG", str(s.catalog)),
        ("EASEL_SECRET_KEY", s.secret_key),
        ("EASEL_DATA_DIR", str(s.data_dir)),
        ("EASEL_PUBLIC_URL", live.base_url),
    ):
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            result = pool.submit(CliRunner().invoke, main, list(args), input=stdin).result()
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return result.output


def make_admin(live: Live, email: str) -> None:
    """An admin account without a sign-in, as the first `easel serve` makes it."""

    async def make() -> None:
        async with live.state.db.transaction() as session:
            await create_account(session, live.state.catalog, email, "mega", is_admin=True)

    live.loop.call(make())


def test_admin_signs_in_grants_credits_changes_plan_and_disables_an_account(
    page: Page, browser: Browser, console: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer = new_email("customer")
    sign_up(page, customer)
    set_plan(console, customer, "standard")
    key = create_key(page, "production")
    api = httpx.Client(base_url=console.base_url, headers={"Authorization": f"Bearer {key}"})
    assert api.get("/api/v1/account").status_code == 200
    page.context.clear_cookies()

    admin = new_email("admin")
    make_admin(console, admin)
    out = easel_cli(
        console,
        monkeypatch,
        "accounts",
        "set-password",
        "--email",
        admin,
        stdin=f"{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}\n",
    )
    assert "can now sign in" in out
    sign_in(page, admin, ADMIN_PASSWORD)
    page.goto("/console/admin/accounts")
    page.get_by_label("Email or id contains").fill(customer.split("@")[0])
    page.get_by_role("button", name="Search").click()
    shot(page, "admin-accounts")
    page.get_by_role("link", name=customer).click()

    credits = int(page.locator("#target-credits").inner_text())
    page.get_by_label("Credits to grant").fill("50")
    page.get_by_label("Reason (written to the ledger)").fill("   ")  # passes `required`
    page.get_by_role("button", name="Grant credits").click()
    expect(page.locator("#e-reason")).to_contain_text("say why")  # beside its field
    expect(page.locator("#target-credits")).to_have_text(str(credits))
    page.get_by_label("Credits to grant").fill("50")
    page.get_by_label("Reason (written to the ledger)").fill("launch promotion")
    page.get_by_role("button", name="Grant credits").click()
    expect(page.locator("#target-credits")).to_have_text(str(credits + 50))
    expect(page.get_by_role("cell", name=re.compile("launch promotion"))).to_be_visible()
    assert api.get("/api/v1/account").json()["credits"]["total"] == credits + 50

    page.get_by_label("Plan").select_option("pro")
    page.get_by_role("button", name="Change the plan").click()
    expect(page.locator("#target-plan")).to_have_text("pro")
    assert api.get("/api/v1/account").json()["plan"] == "pro"
    shot(page, "admin-account")

    with console.worker_stopped():  # one order waits: the queue page shows it
        body = {"style": "anime", "prompt": "a queue", "width": 64, "height": 64, "steps": 2}
        waiting = api.post("/api/v1/generate", json=body).json()["order_id"]
        page.goto("/console/admin/queue")
        expect(page.get_by_role("row").filter(has_text=waiting)).to_contain_text("sdxl-anime")
        shot(page, "admin-queue")
        assert api.post(f"/api/v1/orders/{waiting}/cancel").status_code == 200
    page.goto("/console/admin/accounts?q=" + customer.split("@")[0])
    page.get_by_role("link", name=customer).click()
    page.get_by_role("button", name="Disable the account").click()
    expect(page.locator("#target-state")).to_contain_text("disabled")
    refused = api.get("/api/v1/account")
    assert refused.status_code == 401 and "disabled" in refused.text
    api.close()
    with browser.new_context(base_url=console.base_url) as other:
        customer_page = other.new_page()
        customer_page.goto("/console/sign-in")
        customer_page.get_by_label("Email").fill(customer)
        customer_page.get_by_label("Password").fill(PASSWORD)
        customer_page.get_by_role("button", name="Sign in").click()
        expect(customer_page.get_by_role("alert")).to_contain_text("this account is disabled")

    for name in ("workers", "webhooks", "catalog"):
        page.goto(f"/console/admin/{name}")
        expect(page.locator("h1")).to_be_visible()
        shot(page, f"admin-{name}")
    expect(page.get_by_role("rowheader", name="sdxl-general")).to_be_visible()


def test_easel_accounts_reset_link_prints_a_link_that_works(
    page: Page, console: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    email = new_email("printed")
    sign_up(page, email)
    link = easel_cli(console, monkeypatch, "accounts", "reset-link", "--email", email).strip()
    assert link.startswith(f"{console.base_url}/console/reset?token=")
    page.context.clear_cookies()
    page.goto(link)
    page.get_by_label("New password").fill("printed new password")
    page.get_by_role("button", name="Set the password").click()
    expect(page).to_have_url(re.compile(r"/console/playground$"))
