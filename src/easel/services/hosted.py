"""The services `easel services` hosts (and `easel serve` with it): everything but the workers."""

from __future__ import annotations

from easel.clock import utcnow
from easel.config import Settings
from easel.db.engine import Database
from easel.orders.retention import sweep_expired
from easel.services.base import Periodic, Service
from easel.services.reaper import reaper
from easel.services.webhook_sender import WebhookSender
from easel.storage import Storage


def background_services(settings: Settings, db: Database, storage: Storage) -> list[Service]:
    sweeper = Periodic(
        "retention sweeper", settings.sweep_interval, lambda: sweep_expired(db, storage, utcnow())
    )
    return [reaper(settings, db), sweeper, WebhookSender(settings, db, storage)]
