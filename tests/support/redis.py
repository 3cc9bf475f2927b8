"""The Redis server on loopback, for the rate limits shared by API processes."""

from __future__ import annotations

import os

import redis

REDIS_URL = os.environ.get("EASEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_reachable() -> str | None:
    """None when Redis answers; else why not."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        return str(exc)
    finally:
        client.close()
    return None


def forget(prefix: str) -> None:
    """Delete every key under `prefix`."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
