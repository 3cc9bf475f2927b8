"""One real Easel server (SQLite, a worker on the tiny SDXL pipeline at 128 px, 2 steps, an SMTP
server on loopback for reset links) and one Chromium for the console tests; each test makes its
own people and accounts, so they do not see each other's orders."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message as MessageHandler
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from easel.config import Settings
from tests.support import databases
from tests.support.app import free_port
from tests.support.catalogs import tiny_catalog
from tests.support.live import Live, live_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
PASSWORD = "correct horse battery"
# EASEL_CONSOLE_SCREENSHOTS=docs/console keeps the pages' screenshots for docs/console.md.
SHOTS = os.environ.get("EASEL_CONSOLE_SCREENSHOTS", "")


def ensure_chromium() -> str:
    """Debian's Chromium (Playwright's own download cannot work offline), installed if missing."""
    if not Path(CHROMIUM).exists():
        apt = shutil.which("apt-get")
        if apt is None:
            pytest.skip("no /usr/bin/chromium and no apt-get to install it")
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        install = [apt, "install", "-y", "-q", "chromium"]
        if subprocess.run(install, env=env, timeout=900).returncode:  # stale package lists
            subprocess.run([apt, "update", "-q"], env=env, check=True, timeout=900)
            subprocess.run(install, env=env, check=True, timeout=900)
    return CHROMIUM


class Inbox(MessageHandler):
    """Every message the loopback SMTP server received."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[Message] = []

    def handle_message(self, message: Message) -> None:
        self.messages.append(message)


@pytest.fixture(scope="package")
def inbox() -> Iterator[Inbox]:
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        controller.stop()


@pytest.fixture(scope="package")  # its worker stops with the package: no polling later
def console(
    tmp_path_factory: pytest.TempPathFactory, tiny_sdxl: Path, inbox: Inbox
) -> Iterator[Live]:
    directory = tmp_path_factory.mktemp("console-server")
    settings = Settings.model_validate(
        {
            "data_dir": directory / "data",
            "secret_key": "console-test-secret",
            "database_url": databases.sqlite_url(directory),
            "catalog": tiny_catalog(directory / "catalog.toml", tiny_sdxl, steps=2, side=128),
            "poll_interval": 0.05,
            "progress_interval": 0.0,
            "events_poll_interval": 0.02,
            "allowed_networks": ["127.0.0.0/8"],
            "rate_limits": False,
            "signin_attempts_per_email": 3,
            "account_attempts_per_ip": 200,  # every test signs people up from 127.0.0.1
            "min_side": 64,
            "smtp_url": f"smtp://127.0.0.1:{inbox.port}",  # type: ignore[attr-defined]
        }
    )
    with live_server(settings) as server:
        yield server


# Package scope: Playwright's sync API keeps an event loop running in the main thread while it is
# open, which would break every later test that runs a loop of its own (asyncio.run, anyio).
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(console: Live, playwright: Playwright) -> Iterator[Browser]:
    """After the server, whose set-up runs a loop in this thread."""
    browser = playwright.chromium.launch(executable_path=ensure_chromium(), args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def page(browser: Browser, console: Live) -> Iterator[Page]:
    context = browser.new_context(
        base_url=console.base_url, viewport={"width": 1100, "height": 900}
    )
    context.set_default_timeout(20_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def shot(page: Page, name: str, tmp: Path | None = None) -> Path:
    """A full-page screenshot `name`.png: into EASEL_CONSOLE_SCREENSHOTS when set."""
    folder = (
        Path(SHOTS) if SHOTS else Path(os.environ.get("TMPDIR", "/tmp")) / "easel-console-shots"
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
