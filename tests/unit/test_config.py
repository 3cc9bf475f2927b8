from __future__ import annotations

import pytest
from pydantic import ValidationError

from easel.config import Settings


def test_default_secret_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="EASEL_SECRET_KEY"):
        Settings(environment="production")
    Settings(environment="production", secret_key="x" * 40)


def test_defaults() -> None:
    s = Settings()
    assert (s.host, s.port) == ("0.0.0.0", 7000)
    assert s.db_url.startswith("sqlite+aiosqlite:///")
    assert s.db_url.endswith("easel-data/easel.db")
    assert s.base_url == "http://localhost:7000"
