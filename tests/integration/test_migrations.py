from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from easel.config import Settings
from easel.db.engine import Database
from easel.db.tables import Base

pytestmark = pytest.mark.anyio


async def test_migrations_produce_exactly_the_declared_schema(settings: Settings) -> None:
    db = Database(settings.db_url)
    try:
        async with db.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await db.dispose()
    assert diff == []
