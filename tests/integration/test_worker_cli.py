"""`easel worker --models/--preload`: names resolve through the catalog; mistakes are explained."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from easel.catalog import load_catalog
from easel.cli import main, resolve_models
from easel.config import get_settings


def test_models_resolve_by_id_style_or_alias() -> None:
    catalog = load_catalog()
    names = "sdxl-turbo, general ,dall-e-3,turbo"
    assert resolve_models(catalog, names) == ["sdxl-turbo", "sdxl-general"]


def test_unknown_model_is_refused_with_the_known_ones() -> None:
    with pytest.raises(click.BadParameter, match=r"no catalog model 'nope'; models: .*sdxl-turbo"):
        resolve_models(load_catalog(), "turbo,nope")


def test_worker_command_refuses_bad_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("EASEL_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        result = runner.invoke(main, ["worker", "--preload"])
        assert result.exit_code == 2 and "--preload needs --models" in result.output
        result = runner.invoke(main, ["worker", "--models", "turbo,nope"])
        assert result.exit_code == 2, result.output
        assert "no catalog model 'nope'" in result.output
    finally:
        get_settings.cache_clear()
