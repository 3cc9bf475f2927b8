"""Capabilities: one name routes to the catalog model that can do what the request needs; a request
that needs what no route of the name has is refused in the dialect's shape, naming what the name
can do, with nothing charged; the model lists show each name's capabilities, limits and price."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from easel.catalog import load_catalog
from easel.catalog.capabilities import (
    EDIT,
    IMAGE_TO_IMAGE,
    IMAGE_TO_VIDEO,
    INPAINT,
    TEXT_TO_IMAGE,
    TEXT_TO_VIDEO,
    Need,
)
from easel.catalog.loader import CatalogError
from easel.config import Settings
from tests.support.app import app_client, auth, new_account
from tests.support.audit import nothing_happened
from tests.support.seeds import SEED_002_BODY

pytestmark = pytest.mark.anyio

# gpt-image-2 with no provider key: text to SDXL, images to an edit model (a stand-in: the catalog
# routes by what a model declares). Arrays of tables replace the shipped ones, so all are given.
ROUTED = """
[models.editor]
family = "qwen-image"
source = "Qwen/Qwen-Image"
capabilities = ["edit"]
max_references = 3

[[models.gpt-image-2.channels]]
provider = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "EASEL_TEST_UNSET_KEY"
model = "gpt-image-1"

[[models.gpt-image-2.channels]]
provider = "local"
model = "sdxl-general"
priority = 2

[[models.gpt-image-2.channels]]
provider = "local"
model = "editor"
priority = 3
"""


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, "PNG")
    return out.getvalue()


def test_a_name_routes_by_what_the_request_needs(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(ROUTED)
    catalog = load_catalog(path)
    named = catalog.models["gpt-image-2"]
    route = catalog.route_for
    assert route(named, Need((TEXT_TO_IMAGE,))).id == "sdxl-general"  # type: ignore[union-attr]
    three = Need((EDIT, IMAGE_TO_IMAGE), 3)
    assert route(named, three).id == "editor"  # type: ignore[union-attr]
    assert route(named, Need((EDIT,), 4)) is None  # four images to a three-image model
    assert route(named, Need((INPAINT,), 1)) is None
    wan = route(catalog.models["seedance-2"], Need((IMAGE_TO_VIDEO,), 1))
    assert wan is not None and wan.id == "wan-ti2v-5b"  # an image as the first frame
    assert route(catalog.models["seedance-2"], Need((TEXT_TO_VIDEO,))) == wan
    assert route(catalog.models["seedance-2"], Need((IMAGE_TO_VIDEO,), 2)) is None
    # an unknown capability is a catalog error that lists the known ones
    path.write_text('[models.editor]\nfamily = "sdxl"\nsource = "x"\ncapabilities = ["paint"]\n')
    with pytest.raises(CatalogError, match="unknown \\['paint'\\]"):
        load_catalog(path)


async def test_model_lists_show_capabilities_limits_and_price(settings: Settings) -> None:
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "pro")
        native = (await client.get("/api/v1/models")).json()
        general = next(m for m in native["models"] if m["name"] == "general")
        assert general["capabilities"] == [TEXT_TO_IMAGE, IMAGE_TO_IMAGE]
        assert general["routes"][TEXT_TO_IMAGE] == "sdxl-general"
        assert (general["max_references"], general["credits"]["none"]) == (1, 1)
        assert (general["width"], general["video"]) == (1024, False)
        turbo = next(m for m in native["models"] if m["name"] == "turbo")
        assert turbo["max_steps"] == 4
        openai = (await client.get("/v1/models", headers=auth(key))).json()
        cards = {m["id"]: m for m in openai["data"]}
        assert cards["gpt-image-2"]["capabilities"] == [
            TEXT_TO_IMAGE,
            IMAGE_TO_IMAGE,
            EDIT,
            INPAINT,
        ]
        assert cards["gpt-image-2"]["max_references"] == 3
        assert cards["dall-e-3"]["capabilities"] == [TEXT_TO_IMAGE, IMAGE_TO_IMAGE]
        assert cards["gpt-image-2"]["credits"] == {"none": 1, "regular": 1, "high": 1}
        one = (await client.get("/v1/models/dall-e-3", headers=auth(key))).json()
        assert one["object"] == "model" and "max_references" in one


async def test_what_no_route_can_do_is_refused_in_each_dialects_shape(
    settings: Settings,
) -> None:
    async with app_client(settings) as (client, state):
        account, key = await new_account(state, "mega")
        # seed 002: two images for a video name whose route takes one first frame
        two = ["https://a.example/1.png", "https://a.example/2.png"]
        r = await client.post(
            "/api/v1/tasks/create",
            json=SEED_002_BODY | {"model_id": "seedance-2", "image_urls": two},
            headers=auth(key),
        )
        assert (r.status_code, r.json()["code"], r.json()["data"]) == (200, 0, None)
        assert "at most 1 image(s) to make a video from an image" in r.json()["msg"]
        # OpenAI: a mask to a name without an inpaint route is a 400 naming `mask`
        r = await client.post(
            "/v1/images/edits",
            data={"model": "dall-e-3", "prompt": "a hat"},
            files={
                "image": ("a.png", png(320, 320), "image/png"),
                "mask": ("m.png", png(320, 320, "RGBA"), "image/png"),
            },
            headers=auth(key),
        )
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "mask" and "cannot inpaint with a mask" in error["message"]
        assert "[text_to_image]" in error["message"]
        # native: an image as an animation's first frame
        r = await client.post(
            "/api/v1/generate",
            json={
                "style": "general",
                "product_type": "animation_16f",
                "prompt": "waves",
                "image": "https://a.example/1.png",
            },
            headers=auth(key),
        )
        assert r.status_code == 422 and r.json()["error"]["param"] == "image"
        assert "make a video from an image" in r.json()["error"]["message"]
        await nothing_happened(state, account.id, 2000)
