"""Instruction editing (Qwen-Image-Edit-Plus, 1-3 images) and inpainting (a mask) end to end: a real
server and worker on tiny random-weight pipelines, driven as each dialect's clients drive it (the
openai SDK's images.edit, seed 002's image_urls, seed 004's image), and the refusals of what a
name cannot do, in each dialect's shape, with nothing charged or stored."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI
from PIL import Image
from sqlalchemy import select

from easel.api.state import AppState
from easel.config import Settings
from easel.db.tables import Order
from easel.orders.inputs import load_inputs
from tests.support.app import auth, new_account, serving
from tests.support.audit import nothing_happened
from tests.support.catalogs import tiny_catalog
from tests.support.worker import poll_until, running_worker

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
ONE_DATABASE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # no SQL of its own

# The shipped routes (gpt-image-2, nano-banana-2, kirin_v2_image, 即梦4.0 -> qwen-image-edit;
# gpt-image-2 + mask -> sdxl-inpaint) on tiny folders, and a name that makes images from text only.
EXTRA = """
[models.qwen-image-edit]
source = "{edit}"
steps = 2
guidance = 1.0
width = 256
height = 256

[models.sdxl-inpaint]
source = "{sdxl}"
steps = 2

[models.text-only]
family = "sdxl"
source = "{sdxl}"
capabilities = ["text_to_image"]
aliases = ["plain-draw"]
steps = 2

[dialects]
openai = ["gpt-image-2", "即梦4.0", "plain-draw"]
"""
SMALL = {"min_side": 64, "reference_min_side": 64}  # 64-128 px images, sizes from 64 px


@asynccontextmanager
async def served(
    settings: Settings, tmp_path: Path, sdxl: Path, edit: Path
) -> AsyncIterator[tuple[AppState, str]]:
    extra = EXTRA.format(sdxl=sdxl, edit=edit)
    catalog = tiny_catalog(tmp_path / "catalog.toml", sdxl, side=128, extra=extra)
    async with serving(settings.model_copy(update={"catalog": catalog, **SMALL})) as served:
        yield served


def picture(width: int, height: int, seed: int) -> bytes:
    """Random pixels: an image whose every pixel is worth checking."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def mask_png(width: int, height: int, box: tuple[int, int, int, int]) -> bytes:
    """OpenAI's mask: opaque everywhere but `box`, which is fully transparent (to edit)."""
    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), box)
    out = io.BytesIO()
    mask.save(out, "PNG")
    return out.getvalue()


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def parameters(data: bytes) -> dict[str, Any]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        params: dict[str, Any] = json.loads(image.info["parameters"])
        return params


async def orders_of(state: AppState, account_id: str) -> list[Order]:
    async with state.db.transaction(readonly=True) as s:
        return list(await s.scalars(select(Order).where(Order.account_id == account_id)))


async def finished(state: AppState, order_id: str) -> Order:
    async def fetch() -> Order | None:
        async with state.db.transaction(readonly=True) as s:
            return await s.get(Order, order_id)

    order = await poll_until(
        fetch, lambda o: o is not None and o.status in ("completed", "failed"), timeout=180
    )
    assert order is not None and order.status == "completed", order and order.error_message
    return order


def stored_files(state: AppState) -> list[Path]:
    root = state.settings.outputs_dir
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@ONE_DATABASE
async def test_openai_sdk_edits_two_images_and_inpaints_only_the_mask(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path, tiny_qwen_edit: Path
) -> None:
    first, second = picture(128, 96, 1), picture(96, 128, 2)
    async with served(settings, tmp_path, tiny_sdxl, tiny_qwen_edit) as (state, base):
        account, key = await new_account(state, "standard")
        client = OpenAI(api_key=key, base_url=f"{base}/v1")

        def edit(**kw: Any) -> bytes:
            response = client.images.edit(
                model="gpt-image-2", prompt="put both in one room", response_format="b64_json", **kw
            )
            assert response.data is not None
            return base64.b64decode(str(response.data[0].b64_json))

        box = (32, 24, 96, 72)
        async with running_worker(state):
            edited = await asyncio.to_thread(
                edit, image=[("a.png", first, "image/png"), ("b.png", second, "image/png")]
            )
            inpainted = await asyncio.to_thread(
                edit,
                image=("a.png", first, "image/png"),
                mask=("m.png", mask_png(128, 96, box), "image/png"),
            )
            odd_box = (51, 31, 151, 93)  # an image whose sides are not multiples of 8
            odd_mask = ("m.png", mask_png(201, 123, odd_box), "image/png")
            odd = await asyncio.to_thread(
                edit, image=("o.png", picture(201, 123, 3), "image/png"), mask=odd_mask
            )
        editing, inpainting, _ = sorted(
            await orders_of(state, account.id), key=lambda o: o.created_at
        )
        # Two images: the edit model, the output at the last image's aspect ratio (3:4).
        assert (editing.model, editing.model_alias) == ("qwen-image-edit", "gpt-image-2")
        assert Image.open(io.BytesIO(edited)).size == (192, 320)
        assert parameters(edited)["images"] == 2
        [second_key] = load_inputs(editing.inputs).images
        assert state.storage.get(second_key) == second
        # A mask: the inpaint model; every pixel outside the mask is the input's, inside redrawn.
        assert inpainting.model == "sdxl-inpaint"
        out, before = pixels(inpainted), pixels(first)
        assert out.shape == before.shape
        outside = np.ones(before.shape[:2], dtype=bool)
        outside[box[1] : box[3], box[0] : box[2]] = False
        assert (out[outside] == before[outside]).all()
        assert np.abs(out[~outside].astype(int) - before[~outside]).mean() > 10
        mask_key = load_inputs(inpainting.inputs).mask
        assert mask_key is not None
        stored_mask = np.asarray(Image.open(io.BytesIO(state.storage.get(mask_key))))
        assert (stored_mask[~outside] == 255).all() and (stored_mask[outside] == 0).all()
        # 201x123 comes back 201x123, every unmasked pixel as sent (made 208x128, cropped back).
        out, before = pixels(odd), pixels(picture(201, 123, 3))
        assert out.shape == before.shape
        outside = np.ones(before.shape[:2], dtype=bool)
        outside[odd_box[1] : odd_box[3], odd_box[0] : odd_box[2]] = False
        assert (out[outside] == before[outside]).all()
        assert np.abs(out[~outside].astype(int) - before[~outside]).mean() > 10


@ONE_DATABASE
async def test_seed_002_three_image_urls_and_seed_004_image_edit(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path, tiny_qwen_edit: Path
) -> None:
    images = [picture(96, 96, 3), picture(128, 96, 4), picture(64, 128, 5)]
    urls = ["data:image/png;base64," + base64.b64encode(i).decode() for i in images]
    async with (
        served(settings, tmp_path, tiny_sdxl, tiny_qwen_edit) as (state, base),
        httpx.AsyncClient(base_url=base, timeout=60) as http,
    ):
        _, key = await new_account(state, "standard")
        r = await http.post(
            "/api/v1/tasks/create",
            json={"model_id": "nano-banana-2", "prompt": "合成一张图", "image_urls": urls},
            headers=auth(key),
        )
        assert (r.status_code, r.json()["code"]) == (200, 200), r.text
        task_id = r.json()["data"]["task_id"]
        r = await http.post(
            "/kirin/v1/images/generations",
            json={
                "model": "kirin_v2_image",
                "prompt": "make it night",
                "image": base64.b64encode(images[1]).decode(),
            },
            headers=auth(key),
        )
        assert r.status_code == 200, r.text
        kirin_id = r.json()["task_id"]
        async with running_worker(state):
            nano = await finished(state, task_id)
            kirin = await finished(state, kirin_id)
        r = await http.get(f"/api/v1/tasks/{task_id}", headers=auth(key))
        task = r.json()["data"]
        assert (task["task_status"], task["model_id"]) == (3, "nano-banana-2")
        made = (await http.get(task["image_url"])).content
        # Three images: the edit model; no aspect_ratio given, so the last image's (1:2).
        assert (nano.model, len(load_inputs(nano.inputs).images)) == ("qwen-image-edit", 2)
        assert Image.open(io.BytesIO(made)).size == (192, 384)
        assert parameters(made)["images"] == 3
        # Seed 004's reference image: edited by instruction too (no aspect_ratio: the image's).
        assert (kirin.model, kirin.inputs, kirin.width, kirin.height) == (
            "qwen-image-edit",
            "",
            320,
            192,
        )


@ONE_DATABASE
async def test_what_a_name_cannot_do_is_refused_in_each_dialects_shape(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path, tiny_qwen_edit: Path
) -> None:
    async with (
        served(settings, tmp_path, tiny_sdxl, tiny_qwen_edit) as (state, base),
        httpx.AsyncClient(base_url=base, timeout=60) as http,
    ):
        account, key = await new_account(state, "mega")
        client = openai.AsyncOpenAI(api_key=key, base_url=f"{base}/v1", max_retries=0)
        await refusals(client.images.edit)
        await client.close()
        # Seed 002: four image_urls, a business failure (HTTP 200, code 0) naming the field.
        url = "data:image/png;base64," + base64.b64encode(picture(96, 96, 8)).decode()
        r = await http.post(
            "/api/v1/tasks/create",
            json={"model_id": "gpt-image-2", "prompt": "x", "image_urls": [url] * 4},
            headers=auth(key),
        )
        assert (r.status_code, r.json()["code"], r.json()["data"]) == (200, 0, None)
        assert "image_urls" in r.json()["msg"] and "at most 3" in r.json()["msg"]
        # Native: image_urls to a style without an edit route; image and image_urls together.
        for body, words in [
            ({"style": "general", "image_urls": [url, url]}, "at most 1 image"),
            ({"style": "edit", "image_urls": [url], "image": url}, "not both"),
        ]:
            r = await http.post("/api/v1/generate", json={"prompt": "x"} | body, headers=auth(key))
            assert r.status_code == 422 and r.json()["error"]["param"] == "image_urls", r.text
            assert words in r.json()["error"]["message"]
        # strength: checked and kept for a redraw; an edit or an inpainting refuses it.
        for body, words in [
            ({"style": "general", "image_urls": [url], "strength": 5}, "strength must be in"),
            ({"style": "edit", "image_urls": [url], "strength": 0.5}, "edits by instruction"),
        ]:
            r = await http.post("/api/v1/generate", json={"prompt": "x"} | body, headers=auth(key))
            assert r.status_code == 422 and r.json()["error"]["param"] == "strength", r.text
            assert words in r.json()["error"]["message"]
        image = ("a.png", picture(128, 96, 6), "image/png")
        mask = ("m.png", mask_png(128, 96, (0, 0, 8, 8)), "image/png")
        for files, words in [
            ({"image": image}, "edits by instruction"),
            ({"image": image, "mask": mask}, "inpaints the masked area"),
        ]:
            form = {"model": "gpt-image-2", "prompt": "x", "strength": "0.5"}
            r = await http.post("/v1/images/edits", data=form, files=files, headers=auth(key))
            assert r.status_code == 400 and r.json()["error"]["param"] == "strength", r.text
            assert words in r.json()["error"]["message"]
        two_masks = [("image", image), ("mask", mask), ("mask", mask)]  # not one dropped
        form = {"model": "gpt-image-2", "prompt": "x"}
        r = await http.post("/v1/images/edits", data=form, files=two_masks, headers=auth(key))
        assert r.status_code == 400 and r.json()["error"]["param"] == "mask", r.text
        assert "2 masks were sent; send one" in r.json()["error"]["message"]
        await nothing_happened(state, account.id, 2000)
        assert stored_files(state) == []


async def refusals(edit: Any) -> None:
    """The OpenAI edits a name cannot take: 400s naming the field and what the name can do."""
    image = ("a.png", picture(128, 96, 6), "image/png")
    # A mask to a name that edits but has no inpaint route: what it can do instead.
    with pytest.raises(openai.BadRequestError) as caught:
        await edit(
            model="即梦4.0",
            image=image,
            mask=("m.png", mask_png(128, 96, (0, 0, 8, 8)), "image/png"),
            prompt="x",
        )
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == "mask"
    assert "cannot inpaint with a mask" in error["message"] and "[edit]" in error["message"]
    # Four images to a three-image model.
    with pytest.raises(openai.BadRequestError) as caught:
        await edit(model="gpt-image-2", image=[image] * 4, prompt="x")
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "image"
    assert "at most 3 image(s)" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:  # and a mask: more files than taken
        mask = ("m.png", mask_png(128, 96, (0, 0, 8, 8)), "image/png")
        await edit(model="gpt-image-2", image=[image] * 4, mask=mask, prompt="x")
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "image"
    assert "at most 3 image(s) and one mask" in caught.value.body["message"]
    # An image to a name that makes images from text only.
    with pytest.raises(openai.BadRequestError) as caught:
        await edit(model="plain-draw", image=image, prompt="x")
    assert "'plain-draw' cannot edit images by instruction or redraw" in str(caught.value)
    # Masks that are not what OpenAI's documentation asks: wrong size, no alpha, not PNG.
    bad_masks = [
        (mask_png(96, 96, (0, 0, 8, 8)), "must be the size of the first image, 128x96"),
        (picture(128, 96, 7), "has no alpha channel"),
        (jpeg(128, 96), "must be a PNG"),
        (mask_png(128, 96, (0, 0, 0, 0)), "no fully transparent pixel"),
    ]
    with pytest.raises(openai.BadRequestError) as caught:  # a mask keeps the image's size
        small = ("m.png", mask_png(128, 96, (0, 0, 8, 8)), "image/png")
        await edit(model="gpt-image-2", image=image, mask=small, size="256x256", prompt="x")
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "size"
    assert "send size=auto or 128x96" in caught.value.body["message"]
    for mask, words in bad_masks:
        with pytest.raises(openai.BadRequestError) as caught:
            await edit(
                model="gpt-image-2", image=image, mask=("m.png", mask, "image/png"), prompt="x"
            )
        assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "mask"
        assert words in caught.value.body["message"]


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height)).save(out, "JPEG")
    return out.getvalue()


def test_the_second_image_of_an_edit_reaches_the_model(
    tmp_path: Path, tiny_qwen_edit: Path
) -> None:
    """On the edit backend itself, same seed and first image: another second image gives other
    pixels (random weights show dependence, not resemblance; here a small one)."""
    from easel.backends.base import ImageSpec, Job
    from easel.backends.registry import backend_class
    from easel.catalog import load_catalog

    path = tmp_path / "catalog.toml"
    path.write_text(f'[models.qwen-image-edit]\nsource = "{tiny_qwen_edit}"\nsteps = 2\n')
    model = load_catalog(path).models["qwen-image-edit"]
    backend = backend_class(model.family)(model, "cpu")
    backend.load()
    first = picture(96, 64, 10)

    def run(second: bytes) -> np.ndarray:
        spec = ImageSpec("ORD-1", 0, "swap them", "", 5, first, more_references=(second,))
        job = Job(model=model, images=[spec], width=96, height=64, steps=2, guidance=1.0)
        [out] = backend.run(job, lambda step, total: None)
        return pixels(out.data)

    assert (run(picture(64, 64, 11)) != run(picture(64, 64, 12))).any()
