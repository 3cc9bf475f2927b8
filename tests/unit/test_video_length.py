"""Videos made by length (catalog/video.py): seconds -> frames, the longest clip, catalog checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from easel.catalog import Model, load_catalog, video
from easel.catalog.capabilities import IMAGE_TO_VIDEO, TEXT_TO_VIDEO, model_capabilities
from easel.catalog.loader import CatalogError


def test_shipped_wan_makes_4k_plus_1_frames_up_to_121() -> None:
    wan = load_catalog().models["wan-ti2v-5b"]
    assert model_capabilities(wan) == (TEXT_TO_VIDEO, IMAGE_TO_VIDEO)
    assert [video.frames_for(wan, s) for s in (1, 4, 5)] == [25, 97, 121]
    assert video.longest_seconds(wan) == 5 and video.frames_for(wan, 6) > wan.max_frames
    # A frame rate that is not a multiple of the step rounds up to the next 4k+1.
    assert video.frames_for(Model(id="x", family="wan", fps=6, frame_step=4), 1) == 9


def test_a_default_length_beyond_max_frames_is_a_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text("[models.wan-ti2v-5b]\nseconds = 6\n")
    with pytest.raises(CatalogError, match="145 frames, more than max_frames = 121"):
        load_catalog(path)
    path.write_text("[models.wan-ti2v-5b]\nframe_step = 0\n")
    with pytest.raises(CatalogError, match="frame_step >= 1"):
        load_catalog(path)


def test_a_wan_model_steps_by_its_vae_and_caps_pixels(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text("[models.wan-ti2v-5b]\nframe_step = 2\n")
    with pytest.raises(CatalogError, match="frame_step = 4"):
        load_catalog(path)
    path.write_text("[models.wan-ti2v-5b]\nmax_pixels = 0\n")
    with pytest.raises(CatalogError, match="max_pixels"):
        load_catalog(path)
    assert load_catalog().models["wan-ti2v-5b"].max_pixels == 1024 * 1024
