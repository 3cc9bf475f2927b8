"""What a provider hands back: an order's tasks after the first was accepted, and the check of
each output (pixel cap, clips against still images in ISO media files)."""

from __future__ import annotations

import httpx
import pytest

from easel.backends.upstream.base import NotAccepted, RemoteFailed
from easel.backends.upstream.http import sniff
from easel.backends.upstream.tasks_common import create_tasks
from tests.support.providers import png

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("connection refused"),
        httpx.ConnectTimeout("timed out"),
        NotAccepted("busy", same_channel=True),
    ],
)
async def test_any_error_after_the_first_task_is_final(error: Exception) -> None:
    async def create(index: int) -> str:
        if index:
            raise error
        return "task-0"

    with pytest.raises(RemoteFailed) as failed:
        await create_tasks("ch", 2, create)
    assert failed.value.billed
    assert "task 2 of 2 was refused after the first were accepted" in failed.value.message


async def test_the_first_tasks_refusal_stays_a_refusal() -> None:
    async def create(index: int) -> str:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(httpx.ConnectError):  # the backend's: cannot connect, try elsewhere
        await create_tasks("ch", 2, create)


async def test_an_answer_without_a_task_id_is_a_failure() -> None:
    async def create(index: int) -> str:
        return str({}["taskId"])

    with pytest.raises(RemoteFailed, match="no task id"):
        await create_tasks("ch", 1, create)


def test_an_output_over_the_pixel_cap_is_refused_before_it_is_decoded() -> None:
    data = png(300, 200)
    assert sniff(data, 1, 300, 200, "png", 60_000).width == 300
    with pytest.raises(RemoteFailed, match="300x200 pixels, over 59999"):
        sniff(data, 1, 300, 200, "png", 59_999)


def test_iso_media_clips_pass_and_still_images_must_decode() -> None:
    clip = b"\x00\x00\x00\x18ftypisom" + bytes(16)
    assert sniff(clip, 1, 64, 64, "mp4", 10**6).content_type == "video/mp4"
    for brand in (b"heic", b"avif", b"mif1"):
        still = b"\x00\x00\x00\x18ftyp" + brand + bytes(16)
        with pytest.raises(RemoteFailed, match="not a readable image"):
            sniff(still, 1, 64, 64, "png", 10**6)
