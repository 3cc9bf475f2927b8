"""Reset emails over a real SMTP server on loopback (aiosmtpd, which offers no STARTTLS here)."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink

from easel.config import Settings
from easel.console import mail
from tests.support.app import free_port

pytestmark = pytest.mark.anyio


class Seen(Sink):
    def __init__(self) -> None:
        self.messages = 0

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages += 1
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Seen, int]]:
    seen = Seen()
    controller = Controller(seen, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield seen, controller.port
    finally:
        controller.stop()


async def test_no_password_is_sent_to_a_server_without_starttls(
    smtp: tuple[Seen, int],
) -> None:
    seen, port = smtp
    plain = Settings(secret_key="x" * 16, smtp_url=f"smtp://127.0.0.1:{port}")
    await mail.send_reset_link(plain, "a@example.com", "http://x/console/reset?token=t")
    assert seen.messages == 1  # no credentials: plain SMTP is allowed
    with_login = plain.model_copy(update={"smtp_url": f"smtp://me:secret@127.0.0.1:{port}"})
    with pytest.raises(smtplib.SMTPNotSupportedError, match="offers no STARTTLS"):
        await mail.send_reset_link(with_login, "a@example.com", "http://x/console/reset?token=t")
    assert seen.messages == 1
