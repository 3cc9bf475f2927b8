"""The console in Chromium against a real server and worker: keys used over the API, the
playground live to its image, and a free account that has only the web."""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from easel.api.deps import API_ACCESS_MESSAGE
from tests.console.conftest import shot
from tests.console.helpers import create_key, new_email, set_plan, sign_up
from tests.support.live import Live

pytestmark = pytest.mark.slow


def wait_done(live: Live, key: str, order_id: str) -> dict[str, object]:
    with httpx.Client(base_url=live.base_url, headers={"Authorization": f"Bearer {key}"}) as http:
        for _ in range(60):
            body = http.get(f"/api/v1/status/{order_id}", params={"wait": 5}).json()
            if body["status"] in ("completed", "failed", "canceled"):
                return dict(body)
    raise AssertionError(f"order {order_id} did not finish")


def test_sign_up_create_key_copy_it_and_use_it_with_the_native_api(
    page: Page, console: Live
) -> None:
    email = new_email("keys")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_up(page, email)
    set_plan(console, email, "standard")
    key = create_key(page, "ci")
    assert key.startswith("cfy-")
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == key
    shot(page, "keys")
    page.goto("/console/keys")  # shown once: the page again lists the key by its prefix only
    assert page.locator("#new-key").count() == 0
    expect(page.get_by_role("cell", name=f"{key[:8]}…")).to_be_visible()

    body = {
        "style": "general",
        "prompt": "a red lighthouse",
        "width": 128,
        "height": 128,
        "steps": 2,
        "seed": 11,
    }
    answer = httpx.post(
        f"{console.base_url}/api/v1/generate", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.text
    created = answer.json()
    assert wait_done(console, key, created["order_id"])["status"] == "completed"

    page.goto("/console/history")
    card = page.locator(f'a[href="/console/orders/{created["order_id"]}"]')
    expect(card).to_contain_text("native")
    expect(card.locator("img")).to_be_visible()
    shot(page, "history")
    link = f'a[href="/console/orders/{created["order_id"]}"]'
    for query, shown in (
        ("dialect=console", 0),
        ("dialect=native&model=general&status=completed", 1),
        ("status=failed", 0),
        ("model=anime", 0),
        ("from=2099-01-01", 0),
    ):
        page.goto(f"/console/history?{query}")
        expect(page.locator(link)).to_have_count(shown)
    page.goto("/console/usage")
    expect(page.get_by_role("cell", name=created["order_id"])).to_be_visible()
    expect(page.locator("svg.chart rect")).to_have_count(30)
    shot(page, "usage")
    page.goto("/console/plans")
    expect(page.locator("tr.current")).to_contain_text("standard")
    shot(page, "plans")
    page.goto("/console/keys")
    page.get_by_role("button", name="Revoke ci").click()
    expect(page.get_by_role("row").filter(has_text="revoked")).to_contain_text("ci")
    revoked = httpx.get(
        f"{console.base_url}/api/v1/account", headers={"Authorization": f"Bearer {key}"}
    )
    assert revoked.status_code == 401 and "revoked" in revoked.text


def pixels(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()


def generate_in_playground(page: Page, prompt: str, seed: str = "", enhance: bool = False) -> str:
    page.goto("/console/playground")
    page.get_by_label("Prompt", exact=True).fill(prompt)
    if seed:
        page.get_by_label("Seed").fill(seed)
    if enhance:
        page.get_by_label("Enhance the prompt with an LLM (llm_enhance)").check()
    expect(page.locator("#cost")).to_contain_text("costs 1 credit")
    page.get_by_role("button", name="Generate").click()
    expect(page).to_have_url(re.compile(r"/console/orders/ORD-"))
    return page.url.rsplit("/", 1)[1]


def test_playground_progress_image_download_and_same_seed_again(
    page: Page, console: Live, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    email = new_email("play")
    sign_up(page, email)
    set_plan(console, email, "standard")
    page.goto("/console/playground")
    shot(page, "playground")
    with console.worker_stopped():  # the page is open before the order runs: all of it is live
        first = generate_in_playground(page, "a blue teapot on a table", seed="4242")
        expect(page.locator("#live-status")).to_have_text("pending: number 1 in the queue")
        expect(page.locator("#progress")).to_have_attribute("value", "0")
        assert page.locator("#outputs img").count() == 0
    expect(page.locator("#progress")).to_have_attribute("value", "100")
    image = page.locator("#outputs img")
    expect(image).to_be_visible()
    expect(page.locator("#live-status")).to_have_text("completed")
    spans = re.compile(r"^[0-9.]+ s / [0-9.]+ s / [0-9.]+ s$")
    expect(page.locator("#timings")).to_have_text(spans)  # filled in live, not left at "—"
    with page.expect_download() as info:
        page.get_by_role("link", name="Download").first.click()
    downloaded = info.value.path().read_bytes()
    served = httpx.get(image.get_attribute("src") or "").content
    assert downloaded == served and downloaded.startswith(b"\x89PNG")
    expect(page.locator("#seed")).to_have_text("4242")
    expect(page.locator("#snippet-native")).to_contain_text('"seed": 4242')
    shot(page, "order")

    page.get_by_role("button", name="Run again", exact=True).click()
    expect(page).not_to_have_url(re.compile(first))
    expect(page.locator("#outputs img")).to_be_visible()
    again = httpx.get(page.locator("#outputs img").get_attribute("src") or "").content
    expect(page.locator("#seed")).to_have_text("4242")
    assert pixels(again) == pixels(downloaded)

    # The Reproduce panel's native curl and Easel SDK snippets, run as they are shown, make the
    # same pixels.
    key = create_key(page, "reproduce")
    monkeypatch.setenv("EASEL_API_KEY", key)
    page.goto(f"/console/orders/{first}")
    curl = page.locator("#snippet-native").text_content() or ""
    ran = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60)
    order_id = json.loads(ran.stdout)["order_id"]
    done = wait_done(console, key, order_id)
    assert pixels(httpx.get(done["output_urls"][0]).content) == pixels(downloaded)  # type: ignore[index]
    snippet = page.locator("#snippet-easel-python").text_content() or ""
    assert "easel.generate(" in snippet
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "snippet", "exec"), {})
    [made] = (tmp_path / "outputs").iterdir()
    assert pixels(made.read_bytes()) == pixels(downloaded)


def test_a_free_account_generates_turbo_on_the_web_and_is_refused_the_api(
    page: Page, console: Live
) -> None:
    sign_up(page, new_email("free"))
    page.goto("/console/playground")
    expect(page.get_by_label("Style")).to_have_value("turbo")
    page.get_by_label("Prompt", exact=True).fill("a frog")
    page.get_by_label("Width (overrides the size)").fill("4096")
    page.get_by_label("Height (overrides the size)").fill("64")
    page.get_by_role("button", name="Generate").click()  # refused beside the field, not charged
    expect(page.locator("#e-width")).to_contain_text("width must be between 64 and 2048, got 4096")
    expect(page.get_by_text("20 credits left")).to_be_visible()
    generate_in_playground(page, "a small green frog", enhance=True)
    expect(page.locator("#outputs img")).to_be_visible()
    expect(page.get_by_text("turbo (sdxl-turbo)")).to_be_visible()
    page.reload()  # the enhanced prompt is the worker's: the page shows it once there
    expect(page.locator("#enhanced-prompt")).to_contain_text("frog")
    seed = page.locator("#seed").inner_text()
    page.get_by_role("button", name="Run again with a new seed").click()
    expect(page.locator("#outputs img")).to_be_visible()
    assert page.locator("#seed").inner_text() != seed

    key = create_key(page, "will not work")
    expect(page.get_by_role("note")).to_contain_text("API access requires a paid subscription")
    answer = httpx.post(
        f"{console.base_url}/api/v1/generate",
        json={"style": "turbo", "prompt": "a frog"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 403
    assert API_ACCESS_MESSAGE.format(plan="free") in answer.text
