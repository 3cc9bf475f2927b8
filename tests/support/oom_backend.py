"""The real SDXL backend, except that a job of more than `limit` outputs raises CUDA's
out-of-memory error, as a GPU with room for `limit` images would. Register it for a test's
catalog family with `register(monkeypatch)`."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from easel.backends import registry
from easel.backends.base import Job, StepFn
from easel.backends.sdxl import SDXLBackend
from easel.media.encoding import GeneratedImage

FAMILY = "sdxl-oom-test"


class OutOfMemoryAbove(SDXLBackend):
    family = FAMILY
    limit: ClassVar[int] = 1
    calls: ClassVar[list[int]] = []  # outputs asked for, per pipeline call

    def run(self, job: Job, progress: StepFn) -> list[GeneratedImage]:
        type(self).calls.append(len(job.images))
        if len(job.images) > self.limit:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory: {len(job.images)} outputs asked for, room for {self.limit}"
            )
        return super().run(job, progress)


def register(monkeypatch: pytest.MonkeyPatch, limit: int) -> type[OutOfMemoryAbove]:
    monkeypatch.setitem(registry.FAMILIES, FAMILY, f"{__name__}:OutOfMemoryAbove")
    monkeypatch.setattr(OutOfMemoryAbove, "limit", limit)
    monkeypatch.setattr(OutOfMemoryAbove, "calls", [])
    return OutOfMemoryAbove


def catalog_table(model_dir: Any, style: str = "oom", side: int = 256, steps: int = 2) -> str:
    """A `[models.…]` table of this family for `tiny_catalog(extra=...)`."""
    return (
        f'[models.sdxl-oom]\nfamily = "{FAMILY}"\nsource = "{model_dir}"\nstyles = ["{style}"]\n'
        f"steps = {steps}\nwidth = {side}\nheight = {side}\n"
    )
