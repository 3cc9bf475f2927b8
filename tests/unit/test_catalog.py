from __future__ import annotations

from pathlib import Path

import pytest

from easel.backends.registry import FAMILIES, backend_class
from easel.catalog import load_catalog
from easel.catalog.capabilities import INPAINTING_FAMILIES
from easel.catalog.loader import CatalogError


def test_default_plans_follow_seed_000() -> None:
    c = load_catalog()
    table = {p.id: (p.credits, p.priority, p.max_images, p.animation) for p in c.plans.values()}
    assert table == {
        "free": (20, 0, 1, False),
        "standard": (300, 2, 3, False),
        "pro": (800, 3, 8, True),
        "mega": (2000, 4, 12, True),
    }
    assert not c.plans["free"].api_access
    assert c.plans["free"].models == ("sdxl-turbo",)
    assert all(p.api_access for k, p in c.plans.items() if k != "free")


def test_seed_000_styles_and_seed_names_resolve() -> None:
    c = load_catalog()
    assert sorted(c.style_names) == sorted(
        ["guofeng", "anime", "realistic", "general", "turbo", "zanime", "zimage", "edit"]
    )
    for name in [
        "qwen",
        "gpt-image-2",
        "nano-banana-2",
        "seedance-2",
        "qh-draw-x2-preview",
        "qh-draw-x1-pro",
        "dall-e-3",
        "即梦4.0",
        "kirin_v2_image",
    ]:
        assert c.resolve(name) is not None, name
    assert c.products["batch_4"].images == 4
    assert c.products["animation_24f"].frames == 24


def test_operator_catalog_merges_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(
        '[models.sdxl-general]\nsource = "/weights/sdxl"\nsteps = 12\n'
        "[plans.standard]\ncredits = 500\n"
    )
    c = load_catalog(path)
    assert c.models["sdxl-general"].source == "/weights/sdxl"
    assert c.models["sdxl-general"].steps == 12
    assert c.models["sdxl-general"].styles == ("general",)
    assert c.plans["standard"].credits == 500
    assert c.plans["standard"].priority == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[models.sdxl-general]\nsteeps = 3\n", "unknown field"),
        ('[plans.free]\nmodels = ["nope"]\n', "unknown model 'nope'"),
        ('[models.x]\nfamily = "sdxl"\nsource = "a"\nstyles = ["anime"]\n', "name 'anime' is used"),
        ("not toml = = =", "not valid TOML"),
    ],
)
def test_bad_operator_catalog_is_refused_with_the_entry_named(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    with pytest.raises(CatalogError, match=message):
        load_catalog(path)


def test_missing_operator_catalog(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "missing.toml")


def test_images_go_to_the_provider_only_as_far_as_it_can_take_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With OpenAI's key, gpt-image-2 sends one image to edit to the provider (its module sends
    one); two or three go to the local edit model, a mask to local inpainting."""
    from easel.catalog.capabilities import EDIT, IMAGE_TO_IMAGE, INPAINT, Need, describe

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    c = load_catalog()
    name = c.models["gpt-image-2"]
    routed = [c.route_for(name, Need((EDIT, IMAGE_TO_IMAGE), n)) for n in (1, 2, 3, 4)]
    assert [m.id if m else None for m in routed] == [
        "gpt-image-2",
        "qwen-image-edit",
        "qwen-image-edit",
        None,
    ]
    inpaint = c.route_for(name, Need((INPAINT,), 1, "mask"))
    assert inpaint is not None and inpaint.id == "sdxl-inpaint"
    assert describe(c, name, "gpt-image-2")["max_references"] == 3


@pytest.mark.parametrize("family", ["z-image", "wan", "qwen-image-edit"])
def test_inpaint_on_a_family_without_an_inpainting_pipeline_is_refused(
    tmp_path: Path, family: str
) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(
        f'[models.painter]\nfamily = "{family}"\nsource = "x"\ncapabilities = ["inpaint"]\n'
    )
    with pytest.raises(CatalogError, match=r"models\.painter\.capabilities: .* no inpainting"):
        load_catalog(path)


def test_the_inpainting_families_are_those_whose_backend_inpaints() -> None:
    for family in FAMILIES:
        inpainting = getattr(backend_class(family), "inpainting", None)
        assert (inpainting is not None) == (family in INPAINTING_FAMILIES), family
