"""Outbound HTTP to addresses clients give us: webhooks, reference images, providers."""
