"""What every request handler needs, built once per process."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from easel.backends.registry import served_families
from easel.catalog import Catalog, load_catalog
from easel.config import Settings
from easel.db.engine import Database
from easel.orders.changes import ChangeFeed
from easel.safety.prompt_classifier import PromptClassifier, prompt_classifier_config
from easel.storage import LocalStorage, Storage

if TYPE_CHECKING:
    from easel.api.ratelimit import RateLimits


@dataclass
class AppState:
    settings: Settings
    catalog: Catalog
    db: Database
    storage: Storage
    _limits: RateLimits | None = field(default=None, repr=False)
    _feed: ChangeFeed | None = field(default=None, repr=False)
    _prompt_classifier: PromptClassifier | None = field(default=None, repr=False)
    # argon2 hashes and verifications running at once (each holds a thread and ~64 MiB)
    password_gate: asyncio.Semaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.password_gate = asyncio.Semaphore(max(1, self.settings.password_hashes_at_once))

    @property
    def feed(self) -> ChangeFeed:
        """The order change feed every waiting request follows (started by the API's lifespan,
        or by the first watch)."""
        if self._feed is None:
            self._feed = ChangeFeed(
                self.db,
                interval=self.settings.events_poll_interval,
                max_waiters=self.settings.max_waiters,
            )
        return self._feed

    @property
    def limits(self) -> RateLimits:
        """The rate limiter, made on first use: workers and services never load it."""
        if self._limits is None:
            from easel.api.ratelimit import RateLimits

            self._limits = RateLimits(self.settings)
        return self._limits

    @property
    def prompt_classifier(self) -> PromptClassifier | None:
        """EASEL_PROMPT_CLASSIFIER's checker, made on first use (its model loads on the first
        prompt, in a thread); None when it is off."""
        if not self.settings.prompt_classifier:
            return None
        if self._prompt_classifier is None:
            self._prompt_classifier = PromptClassifier(prompt_classifier_config(self.settings))
        return self._prompt_classifier

    @property
    def served_families(self) -> frozenset[str]:
        """Model families a worker of this build can run (the backend registry)."""
        return frozenset(served_families())

    async def close(self) -> None:
        if self._feed is not None:
            await self._feed.stop()
        await self.db.dispose()
        if self._limits is not None:
            await self._limits.close()

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        return cls(
            settings=settings,
            catalog=load_catalog(settings.catalog),
            db=Database(
                settings.db_url,
                pool_size=settings.db_pool_size,
                max_overflow=settings.db_pool_overflow,
                pool_timeout=settings.db_pool_timeout,
            ),
            storage=build_storage(settings),
        )


def build_storage(settings: Settings) -> Storage:
    if settings.storage == "s3":
        from easel.storage.s3 import S3Storage

        return S3Storage(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region or None,
            public_base=settings.s3_public_base,
            ttl_seconds=settings.url_ttl_seconds,
        )
    return LocalStorage(
        settings.outputs_dir, settings.secret_key, settings.base_url, settings.url_ttl_seconds
    )
