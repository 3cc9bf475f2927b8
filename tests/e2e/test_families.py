"""Each served diffusers family, loaded from a tiny local folder through the operator catalog."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from easel.backends.base import ImageSpec, Job
from easel.backends.common import DiffusersBackend, fit_reference
from easel.backends.registry import backend_class
from easel.catalog import Catalog, Model, load_catalog
from easel.media.encoding import GeneratedImage

pytestmark = [pytest.mark.slow]

FAMILY_MODELS = ("sdxl-general", "z-image", "qwen-image")
IMG2IMG_MODELS = FAMILY_MODELS
# Not multiples of 16: Z-Image and Qwen-Image generate larger and crop to it.
WIDTH, HEIGHT = 264, 256
SMALL = {"width": 136, "height": 128}  # image-to-image tests: what they check is not size
CAT = "一只橘猫坐在窗台上，水墨画风格"  # Chinese prompt: an orange cat on a windowsill, ink wash


@pytest.fixture(scope="module")
def catalog(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_sdxl: Path,
    tiny_zimage: Path,
    tiny_qwen_image: Path,
) -> Catalog:
    sources = {"sdxl-general": tiny_sdxl, "z-image": tiny_zimage, "qwen-image": tiny_qwen_image}
    path = tmp_path_factory.mktemp("catalog") / "catalog.toml"
    path.write_text(
        "".join(f'[models.{m}]\nsource = "{folder}"\nsteps = 2\n' for m, folder in sources.items())
    )
    return load_catalog(path)


@pytest.fixture(scope="module")
def backends(catalog: Catalog) -> Iterator[dict[str, DiffusersBackend]]:
    loaded: dict[str, DiffusersBackend] = {}
    for model_id in FAMILY_MODELS:
        model = catalog.models[model_id]
        backend = backend_class(model.family)(model, "cpu")
        assert isinstance(backend, DiffusersBackend)
        backend.load()
        loaded[model_id] = backend
    yield loaded
    for backend in loaded.values():
        backend.unload()


class Steps:
    """A progress function that records what the backend reported."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, step: int, total: int) -> None:
        self.calls.append((step, total))


def job(model: Model, seeds: list[int], prompt: str = "a red fox in snow", **kw: Any) -> Job:
    reference = kw.pop("reference", None)
    images = [
        ImageSpec("ORD-1", i, prompt, "blurry", seed, reference) for i, seed in enumerate(seeds)
    ]
    size = {"width": WIDTH, "height": HEIGHT, "steps": 2, "guidance": 3.0}
    return Job(model=model, images=images, **(size | kw))


def pixels(image: GeneratedImage) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB")).astype(np.float64)


def parameters(image: GeneratedImage) -> dict[str, Any]:
    """The generation parameters embedded in the file (PNG text, else EXIF ImageDescription)."""
    decoded = Image.open(io.BytesIO(image.data))
    decoded.load()
    text = decoded.info.get("parameters") or decoded.getexif()[0x010E]
    params: dict[str, Any] = json.loads(text)
    return params


def difference(a: GeneratedImage, b: GeneratedImage) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


def reference_png(invert: bool = False) -> bytes:
    """A 400x300 gradient-and-checker picture: another size and shape than the outputs."""
    yy, xx = np.mgrid[0:300, 0:400]
    checker = ((xx // 50 + yy // 50) % 2) * 255
    picture = np.stack([xx * 255 // 400, yy * 255 // 300, checker], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(255 - picture if invert else picture).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("model_id", FAMILY_MODELS)
def test_each_family_makes_n_images_reproducible_by_seed(
    backends: dict[str, DiffusersBackend], model_id: str
) -> None:
    backend = backends[model_id]
    steps = Steps()
    first = backend.run(job(backend.model, [11, 12]), steps)
    again = backend.run(job(backend.model, [11, 13]), Steps())

    assert [(i.width, i.height, i.seed) for i in first] == [(WIDTH, HEIGHT, s) for s in (11, 12)]
    assert [Image.open(io.BytesIO(i.data)).size for i in first] == [(WIDTH, HEIGHT)] * 2
    assert all(i.content_type == "image/png" for i in first)
    assert steps.calls == [(1, 2), (2, 2)]
    assert pixels(first[0]).std() > 1  # a picture, not a constant
    np.testing.assert_array_equal(pixels(first[0]), pixels(again[0]))  # same seed, same pixels
    assert difference(first[0], first[1]) > 1  # seeds 11 and 12
    assert difference(first[1], again[1]) > 1  # seeds 12 and 13


@pytest.mark.parametrize("model_id", IMG2IMG_MODELS)
def test_image_to_image_starts_from_the_reference(
    backends: dict[str, DiffusersBackend], model_id: str
) -> None:
    backend = backends[model_id]
    model = backend.model
    a, b = reference_png(), reference_png(invert=True)

    text_only = backend.run(job(model, [7], **SMALL), Steps())
    from_a = backend.run(job(model, [7], reference=a, strength=0.5, **SMALL), Steps())
    assert (from_a[0].width, from_a[0].height, from_a[0].seed) == (136, 128, 7)
    assert parameters(from_a[0])["strength"] == 0.5
    assert difference(from_a[0], text_only[0]) > 0.5

    def influence(strength: float) -> float:
        """How much swapping the reference changes the output, at one seed."""
        specs = [ImageSpec("ORD-1", 0, "a cat", "", 7, a), ImageSpec("ORD-2", 0, "a cat", "", 7, b)]
        one, other = backend.run(
            Job(model, steps=10, guidance=3.0, images=specs, strength=strength, **SMALL), Steps()
        )
        return difference(one, other)

    low, high = influence(0.1), influence(0.9)
    assert low > 0.5
    assert low > 2 * high, (low, high)


@pytest.mark.parametrize("model_id", IMG2IMG_MODELS)
def test_strength_sets_how_many_steps_run(
    backends: dict[str, DiffusersBackend], model_id: str
) -> None:
    backend = backends[model_id]
    reference = reference_png()
    half, none = Steps(), Steps()
    model = backend.model
    backend.run(job(model, [3], reference=reference, steps=8, strength=0.5, **SMALL), half)
    kept = backend.run(job(model, [3], reference=reference, strength=0.0, **SMALL), none)

    assert half.calls == [(k, 4) for k in range(1, 5)]
    assert none.calls == []  # strength 0 keeps the reference: nothing to denoise
    expected = np.asarray(fit_reference(reference, 136, 128)).astype(np.float64)
    np.testing.assert_array_equal(pixels(kept[0]), expected)
    # A strength too small for even one step of the asked schedule still runs one.
    tiny = Steps()
    backend.run(job(model, [3], reference=reference, strength=0.05, **SMALL), tiny)
    assert len(tiny.calls) >= 1


def test_qwen_image_reads_chinese_prompts(backends: dict[str, DiffusersBackend]) -> None:
    backend = backends["qwen-image"]
    tokenizer = backend.pipe.tokenizer
    ids = tokenizer(CAT).input_ids
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == CAT
    assert len(ids) == len(CAT.encode("utf-8"))  # byte-level: one token per UTF-8 byte here

    chinese = backend.run(job(backend.model, [5], prompt=CAT), Steps())
    english = backend.run(job(backend.model, [5], prompt="an orange cat"), Steps())
    assert difference(chinese[0], english[0]) > 0.05  # the prompt reaches the image
    assert parameters(chinese[0])["prompt"] == CAT


@pytest.mark.parametrize(
    ("fmt", "pil_format", "content_type"),
    [("png", "PNG", "image/png"), ("jpeg", "JPEG", "image/jpeg"), ("webp", "WEBP", "image/webp")],
)
def test_output_formats_decode_and_carry_the_parameters(
    backends: dict[str, DiffusersBackend], fmt: str, pil_format: str, content_type: str
) -> None:
    backend = backends["z-image"]
    [out] = backend.run(job(backend.model, [21], prompt=CAT, output_format=fmt), Steps())

    assert out.content_type == content_type
    image = Image.open(io.BytesIO(out.data))
    assert (image.format, image.size) == (pil_format, (WIDTH, HEIGHT))
    params = parameters(out)
    assert params["prompt"] == CAT
    assert params["seed"] == 21
    assert (params["model"], params["steps"], params["width"]) == ("z-image", 2, WIDTH)


def test_job_scheduler_is_applied_then_the_default_restored(
    backends: dict[str, DiffusersBackend],
) -> None:
    backend = backends["sdxl-general"]
    model, default = backend.model, backend.pipe.scheduler
    before = backend.run(job(model, [9], steps=4), Steps())
    karras = backend.run(job(model, [9], steps=4, scheduler="dpmpp_2m_karras"), Steps())
    assert type(backend.pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert backend.pipe.scheduler.config.use_karras_sigmas
    after = backend.run(job(model, [9], steps=4), Steps())

    assert backend.pipe.scheduler is default
    assert difference(before[0], karras[0]) > 0.5
    np.testing.assert_array_equal(pixels(before[0]), pixels(after[0]))
    assert parameters(karras[0])["scheduler"] == "dpmpp_2m_karras"


def test_flow_matching_families_refuse_a_discrete_scheduler(
    backends: dict[str, DiffusersBackend],
) -> None:
    backend = backends["z-image"]
    with pytest.raises(ValueError, match="flow-matching model; scheduler 'euler'"):
        backend.run(job(backend.model, [1], scheduler="euler"), Steps())


def test_qwen_image_inpaints_only_the_mask(backends: dict[str, DiffusersBackend]) -> None:
    """QwenImageInpaintPipeline on the loaded weights: the masked box is redrawn, every other pixel
    is the reference's (the feather lies inside the mask)."""
    backend = backends["qwen-image"]
    rng = np.random.default_rng(3)
    picture = Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    mask = Image.new("L", (128, 96), 0)
    mask.paste(255, (40, 16, 104, 80))
    files = []
    for image in (picture, mask):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        files.append(buf.getvalue())
    spec = ImageSpec("ORD-1", 0, "a red hat", "", 9, files[0], mask=files[1])
    job = Job(model=backend.model, images=[spec], width=128, height=96, steps=2, guidance=1.0)
    [out] = backend.run(job, Steps())
    result, before = pixels(out), np.asarray(picture).astype(np.float64)
    inside = np.asarray(mask) == 255
    assert (result[~inside] == before[~inside]).all()
    assert np.abs(result[inside] - before[inside]).mean() > 10
    assert parameters(out)["inpaint"] is True
