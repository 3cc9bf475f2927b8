"""The Webhooks page and an order's deliveries: the secret revealed verifies what was sent, a
redelivery is sent again; and a pending order's queue place and cancel on its page."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect
from standardwebhooks import Webhook

from easel.services.webhook_sender import deliver_due
from tests.console.conftest import shot
from tests.console.helpers import create_key, new_email, set_plan, sign_up
from tests.console.test_console_flows import generate_in_playground, wait_done
from tests.support.live import Live
from tests.support.receiver import webhook_receiver

pytestmark = pytest.mark.slow
PAGES = (
    "/console/playground",
    "/console/history",
    "/console/keys",
    "/console/plans",
    "/console/webhooks",
    "/console/account",
    "/console/usage",
)


def send_due(live: Live) -> None:
    async def once() -> None:
        async with httpx.AsyncClient() as http:
            await deliver_due(live.state.db, http, live.state.settings, live.state.storage)

    live.loop.call(once())


def test_secret_verifies_a_delivery_and_redeliver_sends_it_again(page: Page, console: Live) -> None:
    email = new_email("hooks")
    sign_up(page, email)
    set_plan(console, email, "standard")
    key = create_key(page, "hooks")
    with webhook_receiver() as receiver:
        body = {
            "style": "general",
            "prompt": "a kite",
            "width": 64,
            "height": 64,
            "steps": 2,
            "webhook_url": receiver.url,
        }
        created = httpx.post(
            f"{console.base_url}/api/v1/generate",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        ).json()
        wait_done(console, key, created["order_id"])
        send_due(console)
        first = receiver.wait_for(1)[0]

        page.goto("/console/webhooks")
        page.get_by_role("button", name="Reveal").click()
        secret = page.locator("#secret").input_value()
        Webhook(secret).verify(first.raw, first.headers)
        row = page.get_by_role("row").filter(has_text=created["order_id"])
        expect(row).to_contain_text("delivered")
        shot(page, "webhooks")
        row.get_by_role("button", name="Redeliver").click()
        expect(page.get_by_role("row").filter(has_text=created["order_id"])).to_contain_text(
            "pending"
        )
        send_due(console)
        again = receiver.wait_for(2)[1]
        assert again.headers["webhook-id"] == first.headers["webhook-id"]

        page.get_by_role("button", name="Rotate").click()
        expect(page.get_by_role("status")).to_contain_text("A new signing secret")
        assert page.locator("#secret").input_value() != secret
        page.goto(f"/console/orders/{created['order_id']}")
        expect(page.get_by_role("row").filter(has_text="completed")).to_contain_text("delivered")


def test_a_pending_order_shows_its_queue_place_and_cancels_with_a_refund(
    page: Page, console: Live
) -> None:
    sign_up(page, new_email("cancel"))
    page.goto("/console/usage")
    before = page.locator(".stats strong").first.inner_text()
    with console.worker_stopped():
        generate_in_playground(page, "never drawn")
        expect(page.locator("#live-status")).to_contain_text("in the queue")
        page.set_viewport_size({"width": 390, "height": 844})
        shot(page, "order-pending-phone")
        page.get_by_role("button", name="Cancel").click()
        expect(page.locator("#live-status")).to_contain_text("canceled")
    for path in PAGES:  # the layout holds on a phone: nothing wider than the screen
        page.goto(path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
    shot(page, "usage-phone")
    page.goto("/console/usage")
    expect(page.locator(".stats strong").first).to_have_text(before)
    expect(page.get_by_role("cell", name="refund")).to_be_visible()
