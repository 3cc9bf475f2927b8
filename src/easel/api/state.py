"""What every request handler needs, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

from easel.catalog import Catalog, load_catalog
from easel.config import Settings
from easel.db.engine import Database
from easel.storage import LocalStorage


@dataclass
class AppState:
    settings: Settings
    catalog: Catalog
    db: Database
    storage: LocalStorage

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        return cls(
            settings=settings,
            catalog=load_catalog(settings.catalog),
            db=Database(settings.db_url),
            storage=build_storage(settings),
        )


def build_storage(settings: Settings) -> LocalStorage:
    return LocalStorage(
        settings.outputs_dir, settings.secret_key, settings.base_url, settings.url_ttl_seconds
    )
