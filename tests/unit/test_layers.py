"""The import contracts in pyproject.toml hold for the tree, and catch an upward import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"]


def lint(src: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(src)}
    return subprocess.run(
        [*LINT, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_its_layers() -> None:
    result = lint(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_upward_import_breaks_the_build(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "src" / "easel", tmp_path / "easel")
    engine = tmp_path / "easel" / "db" / "engine.py"
    engine.write_text(engine.read_text() + "\nimport easel.worker.runner  # upward\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "easel.db.engine -> easel.worker.runner" in result.stdout
