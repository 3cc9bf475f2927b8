from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from easel.api.state import AppState
from easel.catalog import load_catalog
from easel.config import Settings
from tests.support import databases
from tests.support.redis import REDIS_URL, redis_reachable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Tests poll fast; the rate-limit tests turn the limits on (test_rate_limits.py).
os.environ.setdefault("EASEL_RATE_LIMITS", "false")

POSTGRES_REQUIRED = os.environ.get("CI", "") not in ("", "0", "false") or bool(
    os.environ.get("EASEL_REQUIRE_POSTGRES")
)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def pg_template() -> Iterator[databases.PostgresTemplate]:
    why = databases.postgres_reachable()
    if why is not None:
        message = f"PostgreSQL is not reachable at {databases.ADMIN_URL} ({why})"
        if POSTGRES_REQUIRED:
            pytest.fail(message + "; CI requires it", pytrace=False)
        pytest.skip(message + "; skipping the PostgreSQL half (set EASEL_TEST_POSTGRES_URL)")
    template = databases.PostgresTemplate()
    template.create()
    yield template
    template.close()


@pytest.fixture
def postgres_url(pg_template: databases.PostgresTemplate) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database, for tests that exist only for PostgreSQL."""
    url = pg_template.copy()
    yield url
    pg_template.drop(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield databases.sqlite_url(tmp_path)
        return
    template: databases.PostgresTemplate = request.getfixturevalue("pg_template")
    url = template.copy()
    yield url
    template.drop(url)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        secret_key="test-secret-key",
        poll_interval=0.05,
        reaper_interval=0.2,
        progress_interval=0.0,
        webhook_retry_first=0.05,
        webhook_poll_interval=0.1,
        webhook_retry_factor=1.0,
        webhook_timeout=5.0,
        allowed_networks=["127.0.0.0/8"],
        port=7000,
        rate_limits=False,
    )


@pytest.fixture(scope="session")
def catalog_default():  # type: ignore[no-untyped-def]
    return load_catalog()


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.tiny_models import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_zimage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.tiny_zimage import build_tiny_zimage

    return build_tiny_zimage(tmp_path_factory.mktemp("models") / "tiny-zimage")


@pytest.fixture(scope="session")
def tiny_qwen_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.tiny_qwen_image import build_tiny_qwen_image

    return build_tiny_qwen_image(tmp_path_factory.mktemp("models") / "tiny-qwen-image")


@pytest.fixture(scope="session")
def tiny_qwen_edit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.tiny_qwen_edit import build_tiny_qwen_edit

    return build_tiny_qwen_edit(tmp_path_factory.mktemp("models") / "tiny-qwen-edit")


@pytest.fixture(scope="session")
def tiny_animatediff(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(motion adapter folder, SD 1.5-style base folder)."""
    from tests.support.tiny_animatediff import build_tiny_animatediff

    return build_tiny_animatediff(tmp_path_factory.mktemp("models") / "tiny-animatediff")


@pytest.fixture(scope="session")
def tiny_wan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Wan 2.2 TI2V-style pipeline folder (video from text or a first frame)."""
    from tests.support.tiny_wan import build_tiny_wan

    return build_tiny_wan(tmp_path_factory.mktemp("models") / "tiny-wan")


@pytest.fixture
async def app_state(settings: Settings) -> AsyncIterator[AppState]:
    """The process state for `settings` (database, catalog, storage), disposed after the test."""
    state = AppState.build(settings)
    try:
        yield state
    finally:
        await state.db.dispose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def rate_limit_storage(request: pytest.FixtureRequest) -> Iterator[str]:
    """Where rate limits are counted: "" (memory), or a Redis URL with a key prefix of its own."""
    if request.param == "memory":
        yield ""
        return
    why = redis_reachable()
    if why is not None:
        message = f"Redis is not reachable at {REDIS_URL} ({why})"
        if POSTGRES_REQUIRED:
            pytest.fail(message + "; CI requires it", pytrace=False)
        pytest.skip(message + "; skipping the Redis half (set EASEL_TEST_REDIS_URL)")
    yield REDIS_URL
