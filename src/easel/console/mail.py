"""Sending a password-reset link over SMTP (EASEL_SMTP_URL: smtp:// or smtps://, optional
user:password@), off the event loop. smtp:// upgrades with STARTTLS whenever the server offers
it, and never sends a password without TLS."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from easel.config import Settings

log = logging.getLogger(__name__)


def _send(settings: Settings, message: EmailMessage) -> None:
    url = urlsplit(settings.smtp_url)
    secure = url.scheme == "smtps"
    port = url.port or (465 if secure else 25)
    host = url.hostname or "localhost"
    smtp: smtplib.SMTP = (
        smtplib.SMTP_SSL(host, port, timeout=10) if secure else smtplib.SMTP(host, port, timeout=10)
    )
    with smtp:
        if not secure:
            smtp.ehlo()
            if smtp.has_extn("starttls"):
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            elif url.username:
                raise smtplib.SMTPNotSupportedError(
                    f"{host}:{port} offers no STARTTLS, so the password is not sent; "
                    "give EASEL_SMTP_URL a server that does, or smtps://"
                )
        if url.username:
            smtp.login(unquote(url.username), unquote(url.password or ""))
        smtp.send_message(message)


async def send_reset_link(settings: Settings, to: str, link: str) -> None:
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to
    message["Subject"] = "Reset your Easel password"
    minutes = int(settings.reset_link_minutes)
    message.set_content(
        f"Someone asked to reset the password of {to} on Easel.\n\n"
        f"Open this link within {minutes} minutes to choose a new one:\n{link}\n\n"
        "If it was not you, ignore this message; the password stays as it is.\n"
    )
    await asyncio.to_thread(_send, settings, message)


async def deliver_reset_link(settings: Settings, to: str, link: str) -> None:
    """Send, and log (not raise) a failure: nobody waits on the answer."""
    try:
        await send_reset_link(settings, to, link)
    except (smtplib.SMTPException, OSError) as exc:
        log.warning("password-reset email not sent: %s", exc, extra={"action": "reset_mail_failed"})
