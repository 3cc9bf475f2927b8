"""Acceleration levels: the catalog maps none / regular / high to steps and a scheduler."""

from __future__ import annotations

from pathlib import Path

import pytest

from easel.backends.common import SCHEDULERS
from easel.catalog import load_catalog
from easel.catalog.loader import SCHEDULERS as CATALOG_SCHEDULERS
from easel.catalog.loader import CatalogError
from easel.config import Settings
from easel.orders.request import build_request


def steps_for(model_id: str, acceleration: str, steps: int | None = None) -> int:
    catalog = load_catalog()
    req = build_request(
        Settings(),
        dialect="kie",
        model=catalog.models[model_id],
        model_alias=model_id,
        product=catalog.products["static_image"],
        prompt="A dragon flying over ancient mountains, digital art style",
        steps=steps,
        acceleration=acceleration,
    )
    return req.steps


@pytest.mark.parametrize(
    ("model_id", "none", "regular", "high"),
    [
        ("qwen-image", 30, 20, 15),
        ("sdxl-general", 30, 21, 15),
        ("sdxl-turbo", 4, 2, 1),
        ("z-image", 8, 6, 4),
    ],
)
def test_the_shipped_catalog_runs_fewer_steps_when_accelerated(
    model_id: str, none: int, regular: int, high: int
) -> None:
    assert [steps_for(model_id, a) for a in ("none", "regular", "high")] == [none, regular, high]


def test_acceleration_scales_the_steps_the_client_asked_for() -> None:
    # Seed 001's example: num_inference_steps 30 with acceleration_level "regular".
    assert steps_for("qwen-image", "regular", steps=30) == 20
    assert steps_for("qwen-image", "high", steps=1) == 1  # never below one step


def test_schedulers_per_level() -> None:
    models = load_catalog().models
    assert models["sdxl-general"].scheduler_for("regular") == "dpmpp_2m_karras"
    assert models["sdxl-general"].scheduler_for("none") is None
    assert [models["qwen-image"].scheduler_for(a) for a in ("none", "regular", "high")] == [
        None,
        None,
        None,
    ]


def test_every_catalog_scheduler_name_has_a_diffusers_class() -> None:
    assert set(CATALOG_SCHEDULERS) == set(SCHEDULERS)


def test_an_operator_may_override_one_level_and_keep_the_pipeline_scheduler(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text('[models.sdxl-general]\nacceleration.high = { scheduler = "default" }\n')
    model = load_catalog(path).models["sdxl-general"]
    assert model.scheduler_for("high") is None
    assert model.plan_steps("high", 30) == 15  # the shipped share still applies
    assert model.scheduler_for("regular") == "dpmpp_2m_karras"


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        (
            '[models.z-image]\nacceleration.high = { steps = 0.5, scheduler = "dpmpp_2m" }\n',
            "models.z-image.acceleration.high.scheduler: z-image is a flow-matching model and "
            "cannot use 'dpmpp_2m'; remove the scheduler",
        ),
        (
            '[models.qwen-image]\nacceleration.regular = { scheduler = "euler" }\n',
            "qwen-image is a flow-matching model",
        ),
        (
            '[models.sdxl-general]\nacceleration.high = { scheduler = "heun" }\n',
            "models.sdxl-general.acceleration.high.scheduler 'heun' is unknown; known: ['default'",
        ),
        (
            "[models.sdxl-general]\nacceleration.high = { steps = 0 }\n",
            "acceleration.high.steps is the share of the steps kept, above 0 and at most 1",
        ),
        ("[models.sdxl-general]\nacceleration.high = { steps = 1.5 }\n", "got 1.5"),
        ("[models.sdxl-general]\nacceleration.high = { steps = true }\n", "got True"),
        (
            "[models.sdxl-general]\nacceleration.turbo = { steps = 0.5 }\n",
            "acceleration: unknown level 'turbo'",
        ),
        (
            "[models.sdxl-general]\nacceleration.high = { step = 0.5 }\n",
            "acceleration.high: unknown key(s) ['step']",
        ),
        ("[models.sdxl-general]\nacceleration.high = 0.5\n", "acceleration.high must be a table"),
        ("[models.sdxl-general]\nacceleration = 0.5\n", "acceleration must be a table"),
    ],
)
def test_the_loader_refuses_bad_acceleration(tmp_path: Path, toml: str, needle: str) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(toml)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert needle in str(caught.value)
