"""Webhooks: signing, the outbox and the delivery log. `verify` checks a delivery on the
receiving side (`from easel.webhooks import verify`)."""

from easel.webhooks.signing import WebhookVerificationError, verify

__all__ = ["WebhookVerificationError", "verify"]
