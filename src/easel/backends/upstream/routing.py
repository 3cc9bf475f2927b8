"""Which channel to try next, and when one rests: as new-api and LiteLLM's router do.

Channels are tried by priority (1 first); within one priority at random, in proportion to their
weights. A channel that fails `failures_to_cool` times in a row cools down for `cool_seconds` (or
the provider's Retry-After, if longer); when that has passed, one probe goes through, and the
channel is closed again by a success or cools again on a failure (a circuit breaker).

`Breaker` is plain data fed with outcomes, so the admin endpoint replays recent attempts through
the same rules to show each channel's state in any process.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from easel.catalog import Channel


@dataclass
class Breaker:
    failures_to_cool: int
    cool_seconds: float
    failures: int = 0  # in a row
    cooling_until: float = 0.0  # a clock value (time.time() or monotonic: the caller's choice)
    probing: bool = False  # the one probe after a cool-down is in flight

    @property
    def tripped(self) -> bool:
        """Failed `failures_to_cool` times in a row: cooling, or waiting for its probe."""
        return self.failures >= self.failures_to_cool

    def allows(self, now: float) -> bool:
        if not self.tripped:
            return True
        return now >= self.cooling_until and not self.probing

    def start(self, now: float) -> bool:
        """A try begins (call it with no await since `allows`); True when it is the probe that
        follows a cool-down."""
        if self.tripped and now >= self.cooling_until:
            self.probing = True
            return True
        return False

    def abandon(self) -> None:
        """The probe ended without an outcome (canceled, the worker's own error): another may go."""
        self.probing = False

    def success(self) -> None:
        self.failures, self.cooling_until, self.probing = 0, 0.0, False

    def failure(self, now: float, retry_after: float | None = None) -> None:
        self.failures += 1
        self.probing = False
        if self.tripped:
            self.cooling_until = now + max(self.cool_seconds, retry_after or 0.0)

    def cooling(self, now: float) -> bool:
        return self.tripped and now < self.cooling_until


@dataclass
class Route:
    """A channel as this process runs it: its breaker and its in-flight slots."""

    channel: Channel
    breaker: Breaker
    slots: asyncio.Semaphore
    in_flight: int = 0
    peak: int = 0
    refused: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, channel: Channel) -> Route:
        return cls(
            channel,
            Breaker(channel.failures_to_cool, channel.cool_seconds),
            asyncio.Semaphore(channel.max_in_flight),
        )


def weighted_order(channels: Sequence[Channel], rng: random.Random) -> list[Channel]:
    """By priority; within one, a weighted random order (each key random() ** (1 / weight))."""
    keyed = [
        (c.priority, -(rng.random() ** (1.0 / c.weight)), i, c) for i, c in enumerate(channels)
    ]
    return [c for *_, c in sorted(keyed, key=lambda k: k[:3])]


def plan(
    routes: Iterable[Route], skip: set[str], now: float, rng: random.Random
) -> tuple[list[Route], list[str]]:
    """Routes to try in order, and a note for each one left out (cooling, no credential)."""
    by_name = {r.channel.name: r for r in routes}
    ordered = weighted_order([r.channel for r in by_name.values()], rng)
    chosen: list[Route] = []
    notes: list[str] = []
    for channel in ordered:
        route = by_name[channel.name]
        if channel.name in skip:
            continue
        if not channel.usable:
            notes.append(f"{channel.name} (skipped: {channel.api_key_env} is unset)")
        elif not channel.is_local and not route.breaker.allows(now):
            notes.append(f"{channel.name} (cooling down after {route.breaker.failures} failures)")
        else:
            chosen.append(route)
    return chosen, notes


def describe_routes(model_id: str, channels: Sequence[Channel]) -> list[str]:
    """One line per channel for the start-up log: what will be used, what is skipped and why."""
    lines = []
    for channel in sorted(channels, key=lambda c: c.priority):
        where = channel.model if channel.is_local else f"{channel.base_url} {channel.model}"
        state = (
            "used"
            if channel.usable
            else f"skipped: {channel.api_key_env} is unset (set it to use this channel)"
        )
        lines.append(
            f"{model_id}: priority {channel.priority} {channel.name} -> {channel.provider} "
            f"{where} ({state})"
        )
    return lines
