"""One real server for the client tests (SQLite, a worker on the tiny SDXL pipeline), shared by
the session: each test makes its own account, so they do not see each other's orders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from easel.config import Settings
from tests.support import databases
from tests.support.catalogs import SDXL_MODELS
from tests.support.live import Live, live_server

STEPS = 4
BROKEN_STYLE = "realistic"  # its weights are missing: its orders fail (and are refunded)


def client_catalog(path: Path, tiny_sdxl: Path) -> Path:
    """The tiny SDXL under every style but `BROKEN_STYLE`, and a `trial` plan with no credits."""
    text = "".join(
        f'[models.{m}]\nsource = "{"/nonexistent/weights" if BROKEN_STYLE in m else tiny_sdxl}"\n'
        f"steps = {STEPS}\n"
        for m in SDXL_MODELS
    )
    text += (
        "[plans.trial]\ncredits = 0\npriority = 1\nmax_images = 3\nanimation = false\n"
        'api_access = true\nmodels = ["*"]\nmax_running = 2\n'
    )
    path.write_text(text)
    return path


def client_settings(directory: Path, tiny_sdxl: Path, **update: object) -> Settings:
    directory.mkdir(parents=True, exist_ok=True)
    fields: dict[str, object] = {
        "data_dir": directory / "data",
        "secret_key": "test-secret-key",
        "catalog": client_catalog(directory / "catalog.toml", tiny_sdxl),
        "poll_interval": 0.05,
        "reaper_interval": 0.2,
        "progress_interval": 0.0,
        "events_poll_interval": 0.02,
        "webhook_retry_first": 0.05,
        "webhook_poll_interval": 0.1,
        "webhook_retry_factor": 1.0,
        "allowed_networks": ["127.0.0.0/8"],
        "rate_limits": False,
    } | update
    if "database_url" not in fields:
        fields["database_url"] = databases.sqlite_url(directory)
    return Settings.model_validate(fields)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_sdxl: Path) -> Iterator[Live]:
    settings = client_settings(tmp_path_factory.mktemp("client-server"), tiny_sdxl)
    with live_server(settings) as server:
        yield server
