"""`easel.webhooks.verify`: the Standard Webhooks check, against the `standardwebhooks`
package's own signatures and checks, both ways."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook

from easel.client import WebhookVerificationError
from easel.client import verify as client_verify
from easel.webhooks import verify
from easel.webhooks.signing import headers, new_secret

BODY = b'{"order_id": "ORD-20261121-7K3QX9P2MA", "status": "completed", "output_urls": []}'


def test_accepts_what_the_standard_library_signs() -> None:
    secret = new_secret()
    now = int(time.time())
    theirs = Webhook(secret).sign("msg_2", _datetime(now), BODY.decode())
    sent = {"Webhook-Id": "msg_2", "Webhook-Timestamp": str(now), "Webhook-Signature": theirs}
    assert verify(secret, BODY, sent)["status"] == "completed"
    assert client_verify(secret, BODY.decode(), sent)["order_id"] == "ORD-20261121-7K3QX9P2MA"
    rotated = {**sent, "Webhook-Signature": f"v1,bm90LWl0 {theirs}"}  # one of several
    assert verify(secret, BODY, rotated)["status"] == "completed"


def test_what_easel_signs_passes_the_standard_check() -> None:
    secret = new_secret()
    signed = headers(secret, "msg_1", int(time.time()), BODY)
    assert Webhook(secret).verify(BODY, signed) == verify(secret, BODY, signed)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"body": BODY + b" "}, "no webhook-signature matches"),
        ({"secret": new_secret()}, "no webhook-signature matches"),
        ({"timestamp": -600}, "s old"),
        ({"timestamp": 600}, "s ahead"),
        ({"drop": "webhook-id"}, "missing"),
        ({"secret": "whsec_%%%"}, "not a whsec_"),
    ],
)
def test_refuses(change: dict[str, object], why: str) -> None:
    secret = new_secret()
    stamp = int(time.time()) + int(change.get("timestamp", 0))  # type: ignore[call-overload]
    signed = headers(secret, "msg_1", stamp, BODY)
    signed.pop(str(change.get("drop", "")), None)
    body = change.get("body", BODY)
    assert isinstance(body, bytes)
    with pytest.raises(WebhookVerificationError, match=why):
        verify(str(change.get("secret", secret)), body, signed)


def _datetime(stamp: int):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.fromtimestamp(stamp, UTC)
