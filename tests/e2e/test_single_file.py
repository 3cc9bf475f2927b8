"""An original-layout (SGM) SDXL .safetensors loads offline via `load_pipeline`, weights intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.loaders.single_file_utils import infer_diffusers_model_type
from safetensors.torch import load_file

from easel.backends.loading import load_pipeline
from easel.catalog import Model
from tests.support.tiny_models import (
    build_tiny_sdxl_single_file,
    build_tiny_sdxl_wide_text_encoder_2,
)

pytestmark = [pytest.mark.slow]

WEIGHTED = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def tiny_sdxl_wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Not `tiny_sdxl`: its two text encoders are equally wide, which from_single_file cannot
    # tell apart (see build_tiny_sdxl_wide_text_encoder_2).
    return build_tiny_sdxl_wide_text_encoder_2(tmp_path_factory.mktemp("models") / "tiny-wide")


def _image(pipe: Any, seed: int) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(seed)
    result = pipe(
        prompt="a lighthouse at dusk",
        negative_prompt="blurry",
        num_inference_steps=2,
        width=256,
        height=256,
        generator=generator,
        output_type="np",
    )
    image: np.ndarray = result.images[0]
    return image


def test_single_file_checkpoint_loads_offline_and_generates_like_the_folder(
    tiny_sdxl_wide: Path, tmp_path: Path
) -> None:
    checkpoint = build_tiny_sdxl_single_file(tiny_sdxl_wide, tmp_path / "tiny-sdxl.safetensors")
    assert infer_diffusers_model_type(load_file(checkpoint)) == "xl_base"  # SDXL by its keys
    single = load_pipeline(
        StableDiffusionXLPipeline,
        Model(id="sdxl-single", family="sdxl", source=str(checkpoint), config=str(tiny_sdxl_wide)),
        "cpu",
    )
    folder = load_pipeline(
        StableDiffusionXLPipeline,
        Model(id="sdxl-folder", family="sdxl", source=str(tiny_sdxl_wide)),
        "cpu",
    )

    for name in WEIGHTED:  # every tensor converted back to the diffusers name, bit for bit
        ours, theirs = getattr(single, name).state_dict(), getattr(folder, name).state_dict()
        assert ours.keys() == theirs.keys(), name
        unequal = [key for key in ours if not torch.equal(ours[key], theirs[key])]
        assert unequal == [], (name, unequal[:5])
    assert single.scheduler.config == folder.scheduler.config

    ours_image, theirs_image = _image(single, seed=7), _image(folder, seed=7)
    assert ours_image.shape == (256, 256, 3)
    assert ours_image.std() > 0.01  # a real picture, not a constant
    # Identical weights; only float rounding may differ (a matmul's summation order depends on
    # the weight buffer's memory alignment, which differs between the two loaders).
    np.testing.assert_allclose(ours_image, theirs_image, rtol=0, atol=1e-4)
