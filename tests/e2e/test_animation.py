"""AnimateDiff with a real tiny pipeline: 16/24/32-frame clips as MP4, GIF and WebP, end to end."""

from __future__ import annotations

import io
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import imageio_ffmpeg
import pytest
import torch
from PIL import Image

from easel.backends.animatediff import AnimateDiffBackend
from easel.backends.base import ImageSpec, Job
from easel.catalog import Model, load_catalog
from easel.catalog.loader import CatalogError
from easel.config import Settings
from easel.errors import ModelUnavailable
from easel.media.encoding import GeneratedImage
from tests.support.app import app_client, auth, new_account
from tests.support.catalogs import animatediff_table, tiny_catalog
from tests.support.worker import running_worker, wait_status

pytestmark = pytest.mark.slow

SIDE = 64


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """These tiny models gain nothing from threads, and threads spin on a CPU others share."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_parts(tiny_animatediff: tuple[Path, Path]) -> tuple[Path, Path]:
    return tiny_animatediff


def catalog_model(tmp_path: Path, adapter: Path | str, base: Path | str) -> Model:
    catalog = tiny_catalog(
        tmp_path / "catalog.toml", "/unused", extra=animatediff_table(adapter, base)
    )
    return load_catalog(catalog).models["animatediff"]


@pytest.fixture(scope="module")
def backend(
    tiny_parts: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AnimateDiffBackend]:
    loaded = AnimateDiffBackend(
        catalog_model(tmp_path_factory.mktemp("catalog"), *tiny_parts), "cpu"
    )
    loaded.load()
    yield loaded
    loaded.unload()


def job(model: Model, frames: int, fmt: str, seeds: list[int]) -> Job:
    return Job(
        model=model,
        width=SIDE,
        height=SIDE,
        steps=2,
        guidance=7.5,
        images=[ImageSpec("ORD-1", i, "a fox running", "blurry", s) for i, s in enumerate(seeds)],
        output_format=fmt,
        frames=frames,
    )


def mp4_facts(data: bytes, tmp_path: Path) -> tuple[str, str, int]:
    """(video stream line, comment tag, decoded frame count) as the bundled ffmpeg reads an MP4."""
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    to_raw = ["-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    decoded = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path), *to_raw],
        capture_output=True,
        check=True,
    )
    probe = decoded.stderr.decode().split("Stream mapping:")[0]  # the input's description
    stream = re.search(r"Stream #0:0.*: Video: (.*)", probe)
    comment = re.search(r"^\s*comment\s*: (.*)$", probe, re.MULTILINE)
    assert stream and comment, probe
    return stream[1], comment[1], len(decoded.stdout) // (SIDE * SIDE * 3)


def embedded_parameters(clip: GeneratedImage, tmp_path: Path) -> dict[str, object]:
    if clip.content_type == "video/mp4":
        text = mp4_facts(clip.data, tmp_path)[1]
    else:
        image = Image.open(io.BytesIO(clip.data))
        raw = image.info["comment"] if image.format == "GIF" else image.getexif()[0x010E]
        text = raw.decode() if isinstance(raw, bytes) else raw
    params: dict[str, object] = json.loads(text)
    return params


@pytest.mark.parametrize("frames", [16, 24, 32])
def test_clips_have_exactly_the_frames_asked_in_every_format(
    backend: AnimateDiffBackend, frames: int, tmp_path: Path
) -> None:
    for fmt, content_type in (("mp4", "video/mp4"), ("gif", "image/gif"), ("webp", "image/webp")):
        (clip,) = backend.run(job(backend.model, frames, fmt, [11]), lambda _s, _t: None)
        assert (clip.content_type, clip.width, clip.height, clip.seed) == (
            content_type,
            SIDE,
            SIDE,
            11,
        )
        if fmt == "mp4":
            stream, _, count = mp4_facts(clip.data, tmp_path)
            assert count == frames
            assert stream.startswith("h264 ")
            assert f"yuv420p(progressive), {SIDE}x{SIDE}," in stream
            assert " 8 fps," in stream
        else:
            image = Image.open(io.BytesIO(clip.data))
            assert (image.format, image.n_frames, image.size) == (fmt.upper(), frames, (SIDE, SIDE))
            assert image.is_animated
            assert sum(frame.info["duration"] for frame in _frames(image)) == frames * 1000 / 8
        params = embedded_parameters(clip, tmp_path)
        assert params["seed"] == 11 and params["frames"] == frames and params["fps"] == 8
        assert params["prompt"] == "a fox running" and params["model"] == "animatediff"
    # Past the adapter's 16-frame context the clip is made in overlapping windows (FreeNoise).
    assert backend.pipe.free_noise_enabled is (frames > 16)


def test_same_seed_same_frames_and_progress_counts_every_clip(backend: AnimateDiffBackend) -> None:
    calls: list[tuple[int, int]] = []
    clips = backend.run(
        job(backend.model, 16, "gif", [7, 7, 8]), lambda step, total: calls.append((step, total))
    )
    frames = [[f.copy() for f in _frames(Image.open(io.BytesIO(c.data)))] for c in clips]
    assert [c.seed for c in clips] == [7, 7, 8]
    assert [f.tobytes() for f in frames[0]] == [f.tobytes() for f in frames[1]]
    assert [f.tobytes() for f in frames[0]] != [f.tobytes() for f in frames[2]]
    assert calls == [(step, 6) for step in range(1, 7)]


def _frames(image: Image.Image) -> list[Image.Image]:
    out = []
    for index in range(image.n_frames):
        image.seek(index)
        frame = image.convert("RGB")
        frame.info["duration"] = image.info["duration"]
        out.append(frame)
    return out


def test_the_catalog_refuses_an_animatediff_model_without_a_base(tmp_path: Path) -> None:
    operator = tmp_path / "catalog.toml"
    operator.write_text('[models.animatediff]\nbase = ""\n')
    with pytest.raises(CatalogError, match=r"models\.animatediff: family animatediff needs `base`"):
        load_catalog(operator)
    operator.write_text("[models.animatediff]\nfps = 0\n")
    with pytest.raises(CatalogError, match=r"models\.animatediff\.fps must be at least 1"):
        load_catalog(operator)


def test_a_missing_adapter_or_base_says_which_and_how_to_provide_it(
    tiny_parts: tuple[Path, Path], tmp_path: Path
) -> None:
    adapter, base = tiny_parts
    cases = (
        ("/nonexistent/adapter", base, "motion adapter", "source"),
        (adapter, "/nonexistent/sd15", "base model", "base"),
    )
    for bad_adapter, bad_base, part, field in cases:
        model = catalog_model(tmp_path, bad_adapter, bad_base)
        with pytest.raises(ModelUnavailable) as raised:
            AnimateDiffBackend(model, "cpu").load()
        message = raised.value.message
        assert f"model 'animatediff' {part}" in message
        assert f"{field} /nonexistent/" in message
        assert f'[models.animatediff] {field} = "/path/to/weights"' in message


@pytest.mark.anyio
async def test_native_animation_order_completes_with_an_mp4(
    settings: Settings, tmp_path: Path, tiny_parts: tuple[Path, Path]
) -> None:
    catalog = tiny_catalog(
        tmp_path / "catalog.toml", "/unused", extra=animatediff_table(*tiny_parts)
    )
    settings = settings.model_copy(update={"catalog": catalog, "min_side": SIDE})
    body = {
        "style": "general",
        "product_type": "animation_16f",
        "prompt": "a paper boat on a river",
        "width": SIDE,
        "height": SIDE,
        "seed": 42,
    }
    async with app_client(settings) as (client, state):
        _, key = await new_account(state, "pro")
        r = await client.post(
            "/api/v1/generate", json=body | {"output_format": "jpeg"}, headers=auth(key)
        )
        assert r.status_code == 422, r.text
        assert "output_format must be one of mp4, gif, webp for an animation" in r.text
        r = await client.post("/api/v1/generate", json=body, headers=auth(key))
        assert r.status_code == 200, r.text
        order_id = r.json()["order_id"]
        async with running_worker(state):
            status = await wait_status(client, order_id, auth(key))
        assert status["status"] == "completed", status
        assert status["progress"] == 100
        (output,) = status["outputs"]
        assert (output["content_type"], output["seed"]) == ("video/mp4", 42)
        assert (output["width"], output["height"]) == (SIDE, SIDE)
        assert output["url"].split("?")[0].endswith(".mp4")
        served = await client.get(output["url"])
        assert served.status_code == 200
        assert served.headers["content-type"] == "video/mp4"
    stream, comment, count = mp4_facts(served.content, tmp_path)
    assert count == 16
    assert stream.startswith("h264 ")
    assert json.loads(comment)["prompt"] == "a paper boat on a river"
