"""Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256(id.timestamp.body)>`,
made by the sender and checked by `verify` (standard library only: receivers and the client
import it without the server)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


TOLERANCE_SECONDS = 5 * 60


class WebhookVerificationError(ValueError):
    """The delivery is not signed with this secret, or its timestamp is too old or too new."""


def verify(
    secret: str,
    body: bytes | str,
    headers: Mapping[str, str],
    *,
    tolerance: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> Any:
    """The Standard Webhooks check of one delivery: its `webhook-signature` (any of its
    space-separated `v1,` signatures) is the HMAC of `webhook-id`, `webhook-timestamp` and the
    body as received, and the timestamp is within `tolerance` seconds of now. Returns the body
    decoded from JSON; raises WebhookVerificationError. Header names in any case."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (
        lower.get(name, "") for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    )
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationError(
            "missing webhook-id, webhook-timestamp or webhook-signature header"
        )
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp {stamp!r} is not a number") from None
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is {abs(age):.0f} s {'old' if age > 0 else 'ahead'} "
            f"(more than {tolerance} s): a replay, or a wrong clock"
        )
    raw = body.encode() if isinstance(body, str) else body
    try:
        base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the secret is not a whsec_ base64 secret") from None
    expected = signature(secret, msg_id, timestamp, raw)
    if not any(hmac.compare_digest(expected, s) for s in signatures.split() if s.startswith("v1,")):
        raise WebhookVerificationError("no webhook-signature matches this secret and body")
    return json.loads(raw)
