"""Password-reset and invite links: signed, expiring; a reset link works until the password
changes (so once), an invite names the email it may sign up."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from easel.accounts import users
from easel.config import Settings
from easel.console import tokens
from easel.db.tables import ConsoleUser
from easel.errors import InvalidRequest, NotFound

EXPIRED = "this link is unknown, used or expired; ask for a new one"


def _stamp(user: ConsoleUser) -> str:
    return f"{user.id}:{user.password_changed_at.timestamp():.6f}"


def reset_link(settings: Settings, user: ConsoleUser) -> str:
    token = tokens.expiring(
        settings.secret_key, "reset", _stamp(user), settings.reset_link_minutes * 60
    )
    return f"{settings.base_url}/console/reset?token={token}"


async def user_of_reset(session: AsyncSession, settings: Settings, token: str) -> ConsoleUser:
    value = tokens.opened(settings.secret_key, "reset", token)
    if value is None:
        raise InvalidRequest(EXPIRED, param="password")
    try:
        user = await users.get_user(session, value.partition(":")[0])
    except NotFound:
        raise InvalidRequest(EXPIRED, param="password") from None
    if _stamp(user) != value:
        raise InvalidRequest(EXPIRED, param="password")
    return user


def invite_link(settings: Settings, email: str) -> str:
    email = users.normal_email(email)
    token = tokens.expiring(settings.secret_key, "invite", email, settings.invite_link_days * 86400)
    return f"{settings.base_url}/console/sign-up?invite={token}"


def invited_email(settings: Settings, token: str) -> str | None:
    return tokens.opened(settings.secret_key, "invite", token) if token else None
