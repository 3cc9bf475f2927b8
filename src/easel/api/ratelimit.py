"""Rate limits by plan: requests per minute and requests open at once, per API key and per
account, so one tenant's burst never takes another's share of an API process.

Counted in this process's memory (embedded), or in Redis when EASEL_RATE_LIMIT_STORAGE names
one, so that every API replica sees the same counts. Requests per minute use a moving window
(the `limits` library); open requests are a sorted set per key and account in Redis, whose
members a vanished process leaves behind expire after EASEL_RATE_LIMIT_OPEN_TTL seconds.
When Redis cannot be reached the limits are not applied (logged): an outage of the limiter does
not take the API down with it.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError

from easel.catalog import Plan
from easel.config import Settings
from easel.errors import RateLimited

log = logging.getLogger(__name__)


def _unreachable() -> None:
    log.warning("rate-limit storage unreachable; request allowed", extra={"action": "rate_limit"})


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        url = settings.rate_limit_storage
        self.prefix = settings.rate_limit_prefix
        self._redis: Any = None
        if url:
            import redis.asyncio

            url = url.removeprefix("async+")
            pool = redis.asyncio.ConnectionPool.from_url(url)  # one pool, closed by `close`
            options: dict[str, Any] = {"connection_pool": pool}  # `limits` types them as scalars
            storage: MemoryStorage | RedisStorage = RedisStorage(
                "async+" + url, implementation="redispy", key_prefix=self.prefix, **options
            )
            self._redis = redis.asyncio.Redis(connection_pool=pool)
        else:
            storage = MemoryStorage()
        self.window = MovingWindowRateLimiter(storage)
        self._open: Counter[str] = Counter()  # in memory: open requests per subject

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.connection_pool.disconnect()

    async def hit(self, plan: Plan, account_id: str, key_id: str) -> None:
        """Count one request; RateLimited when the key or the account is over its minute."""
        for subject, per_minute, who in (
            (f"key:{key_id}", plan.key_requests_per_minute, "this API key"),
            (f"account:{account_id}", plan.requests_per_minute, "this account"),
        ):
            if per_minute <= 0:
                continue
            item = RateLimitItemPerMinute(per_minute)
            try:
                allowed = await self.window.hit(item, subject)
                reset = 0.0 if allowed else (await self.window.get_window_stats(item, subject))[0]
            except (RedisError, OSError):
                _unreachable()
                return
            if not allowed:
                wait = max(1, math.ceil(reset - time.time()))
                raise RateLimited(
                    f"{who} made more than {per_minute} requests in the last minute (plan "
                    f"{plan.id}); send the next one after {wait} s",
                    retry_after=wait,
                )

    async def attempt(self, subject: str, most: int, seconds: float) -> int | None:
        """Count one attempt at `subject` (a sign-in, a reset...) in a moving window of `seconds`;
        None when it is one of the first `most`, else the seconds to wait. Counted before the
        attempt's work, so parallel attempts cannot all pass."""
        if most <= 0:
            return None
        item = RateLimitItemPerSecond(most, max(1, math.ceil(seconds)))
        try:
            if await self.window.hit(item, "attempt:" + subject):
                return None
            reset = (await self.window.get_window_stats(item, "attempt:" + subject))[0]
        except (RedisError, OSError):
            _unreachable()
            return None
        return max(1, math.ceil(reset - time.time()))

    async def forget(self, subject: str, most: int, seconds: float) -> None:
        """Clear `subject`'s attempts (a sign-in that succeeded)."""
        item = RateLimitItemPerSecond(max(most, 1), max(1, math.ceil(seconds)))
        try:
            await self.window.clear(item, "attempt:" + subject)
        except (RedisError, OSError):
            _unreachable()

    @asynccontextmanager
    async def open_request(self, plan: Plan, account_id: str, key_id: str) -> AsyncIterator[None]:
        """Hold one of the key's and the account's open-request slots while the request runs."""
        held: list[str] = []
        try:
            for subject, most, who in (
                (f"open:key:{key_id}", plan.key_max_open_requests, "this API key"),
                (f"open:account:{account_id}", plan.max_open_requests, "this account"),
            ):
                if most <= 0:
                    continue
                try:
                    member = await self._take(subject, most)
                except (RedisError, OSError):
                    _unreachable()
                    continue
                if member is None:
                    raise RateLimited(
                        f"{who} already has {most} requests open (plan {plan.id}), such as "
                        "waits and event streams; close one or wait for it to end",
                        retry_after=1,
                    )
                held.append(f"{subject}\n{member}")
            yield
        finally:
            for taken in held:
                try:
                    await self._give_back(*taken.split("\n"))
                except (RedisError, OSError):  # the slot expires with the TTL
                    _unreachable()

    async def _take(self, subject: str, most: int) -> str | None:
        if self._redis is None:
            if self._open[subject] >= most:
                return None
            self._open[subject] += 1
            return "local"
        key, member, now = self.prefix + subject, uuid.uuid4().hex, time.time()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now - self.settings.rate_limit_open_ttl)
            pipe.zadd(key, {member: now})
            pipe.zcard(key)
            pipe.expire(key, math.ceil(self.settings.rate_limit_open_ttl))
            _, _, count, _ = await pipe.execute()
        if count > most:
            await self._redis.zrem(key, member)
            return None
        return member

    async def _give_back(self, subject: str, member: str) -> None:
        if self._redis is None:
            self._open[subject] -= 1
            if self._open[subject] <= 0:
                del self._open[subject]
            return
        await self._redis.zrem(self.prefix + subject, member)
