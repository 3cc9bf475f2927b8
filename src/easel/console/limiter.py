"""Sign-in attempts counted per email and per client address in this process's memory: a
sliding window, bounded in size so that a flood of addresses cannot grow it without end."""

from __future__ import annotations

import time
from collections import OrderedDict, deque

MAX_KEYS = 100_000


class AttemptLimiter:
    def __init__(self, per_email: int, per_ip: int, window: float) -> None:
        self.limits = {"email": per_email, "ip": per_ip}
        self.window = window
        self._seen: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def _recent(self, kind: str, key: str, now: float) -> deque[float]:
        times = self._seen.get((kind, key))
        if times is None:
            times = self._seen[(kind, key)] = deque()
            while len(self._seen) > MAX_KEYS:
                self._seen.popitem(last=False)
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def refused(self, email: str, ip: str) -> str | None:
        """Why a sign-in attempt is refused now (and for how long), or None."""
        now = time.monotonic()
        for kind, key in (("email", email), ("ip", ip)):
            times = self._recent(kind, key, now)
            if len(times) >= self.limits[kind]:
                wait = int(times[0] + self.window - now) + 1
                who = "this email" if kind == "email" else "this address"
                return (
                    f"too many sign-in attempts for {who}; wait {wait} s and try again, "
                    "or reset the password"
                )
        return None

    def failed(self, email: str, ip: str) -> None:
        now = time.monotonic()
        for kind, key in (("email", email), ("ip", ip)):
            self._recent(kind, key, now).append(now)
