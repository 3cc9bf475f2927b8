"""Reference images by URL (a real loopback server), raw base64 and data URL, and every rule."""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import os
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from easel.config import Settings
from easel.errors import InvalidRequest
from easel.media.references import Reference, load_reference
from tests.support.app import free_port
from tests.support.file_server import FileServer, Route, file_server

pytestmark = pytest.mark.anyio


def encoded(fmt: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buffer, fmt)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A small real PNG whose header claims `width` x `height` (CRC fixed up)."""
    data = bytearray(encoded("PNG", (320, 320)))
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(data[12:29]))
    return bytes(data)


PNG = encoded("PNG", (320, 400))
JPEG = encoded("JPEG", (512, 300))
WEBP = encoded("WEBP", (400, 400))
GIF = encoded("GIF", (400, 400))
NOISE = Image.frombytes("RGB", (400, 400), os.urandom(400 * 400 * 3))
MB = 1 << 20


@pytest.fixture
def ref_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        allowed_networks=["127.0.0.0/8"],
        reference_max_bytes=MB,
        reference_fetch_timeout=1.0,
    )


@pytest.fixture
def files() -> Iterator[FileServer]:
    routes = {
        "/a.png": Route(PNG, headers={"content-type": "image/png"}),
        "/photo.jpg": Route(PNG, headers={"content-type": "image/gif"}),
        "/b.jpeg": Route(JPEG),
        "/c.webp": Route(WEBP),
        "/d.gif": Route(GIF),
        "/hop": Route(status=302, headers={"location": "/b.jpeg"}),
        "/to-metadata": Route(
            status=302, headers={"location": "http://169.254.169.254/latest/meta-data"}
        ),
        "/loop": Route(status=302, headers={"location": "/loop"}),
        "/gone": Route(b"no such image", status=404),
        "/declared-big": Route(bytes(MB), repeat=3),
        "/endless": Route(bytes(MB), repeat=64, length=False),
        "/slow": Route(PNG, chunk=100, delay=0.3),
        # 20 kB of gzip that would expand to 20 MB: refused without decompressing
        "/bomb.png": Route(
            gzip.compress(bytes(20 * MB)), headers={"content-encoding": "gzip, gzip"}
        ),
    }
    with file_server(routes) as server:
        yield server


async def refusal(settings: Settings, value: str, *, allow_data_url: bool = False) -> str:
    with pytest.raises(InvalidRequest) as caught:
        await load_reference(settings, value, "image", allow_data_url=allow_data_url)
    assert caught.value.status_code == 422
    assert caught.value.param == "image"
    message = caught.value.message
    assert message.startswith("image ")
    return message


async def test_urls_give_the_sniffed_format_and_size(
    ref_settings: Settings, files: FileServer
) -> None:
    got = [
        await load_reference(ref_settings, files.url(p), "image", allow_data_url=False)
        for p in ("/a.png", "/b.jpeg", "/c.webp", "/photo.jpg", "/hop")
    ]
    assert got == [
        Reference(PNG, "image/png", 320, 400),
        Reference(JPEG, "image/jpeg", 512, 300),
        Reference(WEBP, "image/webp", 400, 400),
        Reference(PNG, "image/png", 320, 400),
        Reference(JPEG, "image/jpeg", 512, 300),
    ]


async def test_raw_base64_and_data_urls(ref_settings: Settings) -> None:
    raw = base64.b64encode(JPEG).decode()
    wrapped = "\n".join(raw[i : i + 76] for i in range(0, len(raw), 76))
    unpadded = base64.b64encode(PNG).decode().rstrip("=")
    for value in (raw, wrapped, unpadded):
        ref = await load_reference(ref_settings, value, "image", allow_data_url=False)
        assert (ref.content_type, ref.width) in (("image/jpeg", 512), ("image/png", 320))
    data_url = f"data:image/jpeg;base64,{raw}"
    ref = await load_reference(ref_settings, data_url, "image", allow_data_url=True)
    assert ref == Reference(JPEG, "image/jpeg", 512, 300)
    message = await refusal(ref_settings, data_url)
    assert "raw base64 string without a prefix" in message
    assert "data:image/png;base64," in message
    message = await refusal(ref_settings, "data:text/plain,hello", allow_data_url=True)
    assert "not a base64 image" in message


async def test_not_an_image_reference_at_all(ref_settings: Settings) -> None:
    assert "not valid base64" in await refusal(ref_settings, "this is not an image!")
    assert "not a ftp: URL" in await refusal(ref_settings, "ftp://127.0.0.1/a.png")
    assert "is empty" in await refusal(ref_settings, "   ")
    half = base64.b64encode(PNG[: len(PNG) // 2]).decode()
    assert "not a readable JPEG, PNG or WebP image" in await refusal(ref_settings, half)


async def test_gif_is_refused_by_its_bytes(ref_settings: Settings, files: FileServer) -> None:
    for value in (files.url("/d.gif"), base64.b64encode(GIF).decode()):
        message = await refusal(ref_settings, value)
        assert "must be a JPEG, PNG or WebP image; this one is GIF" in message


async def test_sides_and_aspect_ratio(ref_settings: Settings) -> None:
    def b64(size: tuple[int, int]) -> str:
        return base64.b64encode(encoded("PNG", size)).decode()

    assert "each side must be at least 300 px" in await refusal(ref_settings, b64((299, 400)))
    for size in ((751, 300), (300, 751)):
        message = await refusal(ref_settings, b64(size))
        assert "aspect ratio must be within 1:2.5 and 2.5:1" in message
    for size in ((750, 300), (300, 300)):
        ref = await load_reference(ref_settings, b64(size), "image", allow_data_url=False)
        assert (ref.width, ref.height) == size


async def test_decompression_bombs(ref_settings: Settings) -> None:
    huge = base64.b64encode(png_declaring(100_000, 100_000)).decode()
    assert len(huge) < 2000
    assert "too many pixels to decode safely" in await refusal(ref_settings, huge)
    capped = ref_settings.model_copy(update={"reference_max_pixels": 1_000_000})
    over_cap = base64.b64encode(png_declaring(1200, 1000)).decode()
    message = await refusal(capped, over_cap)
    assert "1200x1000 is more than 1000000 pixels" in message


async def test_byte_limit(ref_settings: Settings, files: FileServer) -> None:
    buffer = io.BytesIO()
    NOISE.save(buffer, "PNG")
    assert len(buffer.getvalue()) > MB // 4
    small = ref_settings.model_copy(update={"reference_max_bytes": MB // 4})
    message = await refusal(small, base64.b64encode(buffer.getvalue()).decode())
    assert "larger than 262144 bytes (0.25 MB)" in message
    assert "larger than 1048576 bytes" in await refusal(ref_settings, files.url("/declared-big"))
    assert files.sent["/declared-big"] < 3 * MB


async def test_body_without_length_is_cut_off_at_the_limit(
    ref_settings: Settings, files: FileServer
) -> None:
    assert "larger than 1048576 bytes" in await refusal(ref_settings, files.url("/endless"))
    await asyncio.sleep(0.3)
    assert files.sent["/endless"] < 16 * MB


async def test_compressed_bodies_are_refused_not_expanded(
    ref_settings: Settings, files: FileServer
) -> None:
    assert "served compressed (gzip, gzip)" in await refusal(ref_settings, files.url("/bomb.png"))


async def test_slow_server_times_out(ref_settings: Settings, files: FileServer) -> None:
    started = time.monotonic()
    message = await refusal(ref_settings, files.url("/slow"))
    assert "could not be fetched within 1 s" in message
    assert time.monotonic() - started < 3


async def test_unreachable_urls_say_why(ref_settings: Settings, files: FileServer) -> None:
    assert "answered HTTP 404" in await refusal(ref_settings, files.url("/gone"))
    assert "does not resolve" in await refusal(ref_settings, "http://nonexistent.invalid/a.png")
    closed = f"http://127.0.0.1:{free_port()}/a.png"
    assert "could not be fetched (ConnectError" in await refusal(ref_settings, closed)
    assert "redirected more than 3 times" in await refusal(ref_settings, files.url("/loop"))


async def test_private_addresses_refused_and_redirects_checked_again(
    ref_settings: Settings, files: FileServer, tmp_path: Path
) -> None:
    message = await refusal(ref_settings, files.url("/to-metadata"))
    assert "169.254.169.254" in message and "link-local" in message
    strict = Settings(data_dir=tmp_path)
    message = await refusal(strict, files.url("/a.png"))
    assert "resolves to 127.0.0.1, a private, loopback" in message
    assert files.sent.get("/a.png") is None
