"""The worker's model cache on real tiny SDXL pipelines: byte budget, count cap, LRU order."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import constants

from easel.catalog import Model
from easel.worker.models import ModelCache, module_bytes, weights_on_disk

pytestmark = pytest.mark.slow


def model(model_id: str, source: Path) -> Model:
    return Model(id=model_id, family="sdxl", source=str(source), steps=2)


@pytest.fixture(scope="module")
def one_model_bytes(tiny_sdxl: Path) -> int:
    cache = ModelCache("cpu", max_loaded=1)
    cache.get(model("probe", tiny_sdxl))
    size = cache.size_of("probe")
    assert size is not None
    return size


def test_size_is_parameter_and_buffer_bytes(tiny_sdxl: Path, one_model_bytes: int) -> None:
    cache = ModelCache("cpu", max_loaded=1)
    backend: Any = cache.get(model("a", tiny_sdxl))
    assert cache.size_of("a") == module_bytes(backend) == one_model_bytes
    unet_bytes = sum(p.numel() * p.element_size() for p in backend.pipe.unet.parameters())
    assert 0 < unet_bytes < one_model_bytes
    # float32 on disk and in memory: the first-load estimate is about the measured size.
    assert 0.9 < weights_on_disk(model("a", tiny_sdxl)) / one_model_bytes < 1.1
    assert cache.loaded_bytes == one_model_bytes


def test_budget_unloads_least_recently_used(tiny_sdxl: Path, one_model_bytes: int) -> None:
    budget = int(2.5 * one_model_bytes)  # room for two
    cache = ModelCache("cpu", max_loaded=10, budget_bytes=budget)
    a: Any = cache.get(model("a", tiny_sdxl))
    cache.get(model("b", tiny_sdxl))
    assert cache.loaded == ["a", "b"]
    cache.get(model("c", tiny_sdxl))
    assert cache.loaded == ["b", "c"]
    assert a.pipe is None  # unloaded, not just forgotten
    assert cache.loaded_bytes <= budget
    cache.get(model("b", tiny_sdxl))  # b is now the most recent
    cache.get(model("a", tiny_sdxl))
    assert cache.loaded == ["b", "a"]


def test_count_cap_still_applies_without_a_budget(tiny_sdxl: Path) -> None:
    cache = ModelCache("cpu", max_loaded=2)
    for name in ("a", "b", "c"):
        cache.get(model(name, tiny_sdxl))
    assert cache.loaded == ["b", "c"]


def test_a_model_larger_than_the_budget_loads_alone(tiny_sdxl: Path) -> None:
    cache = ModelCache("cpu", max_loaded=10, budget_bytes=1)
    first = cache.get(model("a", tiny_sdxl))
    assert cache.get(model("a", tiny_sdxl)) is first  # a hit keeps it
    cache.get(model("b", tiny_sdxl))
    assert cache.loaded == ["b"]


def test_a_repo_in_the_hub_cache_counts_and_shared_parts_count_once(
    tiny_wan: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repo id's first-load estimate is its snapshot's weight files (symlinks to blobs, as
    huggingface_hub lays them out); Wan's two pipelines share one set of weights."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--Wan-AI--Wan2.2-TI2V-5B-Diffusers"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc")
    (repo / "blobs").mkdir()
    for file in (f for f in tiny_wan.rglob("*") if f.is_file()):
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        blob.write_bytes(file.read_bytes())
        link = repo / "snapshots" / "abc" / file.relative_to(tiny_wan)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
    local = Model(id="wan", family="wan", source=str(tiny_wan), steps=2)
    hub = Model(id="wan", family="wan", source="Wan-AI/Wan2.2-TI2V-5B-Diffusers", steps=2)
    assert weights_on_disk(hub) == weights_on_disk(local) > 0
    assert weights_on_disk(Model(id="x", family="wan", source="nobody/nothing")) == 0
    cache = ModelCache("cpu", max_loaded=1)
    backend: Any = cache.get(local)
    assert backend.first_frame_pipe.transformer is backend.pipe.transformer
    measured = cache.size_of("wan")
    assert measured is not None
    assert 0.9 < weights_on_disk(local) / measured < 1.1  # float32 on disk and in memory
