"""Write a tiny pipeline's `save_pretrained()` folder so no reader ever sees half of one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def save_atomically(
    make_pipeline: Callable[[], Any], path: Path, marker: str = "model_index.json"
) -> Path:
    """Build and save at `path` unless a finished folder (one holding `marker`, the file
    `save_pretrained()` writes: model_index.json for a pipeline, config.json for a model) is
    already there; return `path`."""
    if (path / marker).exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        make_pipeline().save_pretrained(staging)
        try:
            os.replace(staging, path)  # works if `path` is missing or an empty folder
        except OSError:
            if not (path / marker).exists():  # nobody else finished it
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
