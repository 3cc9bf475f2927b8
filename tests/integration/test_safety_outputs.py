"""The shipped NSFW classifier on images the test builds, a clip's sampled frames, the plan's
action on each output, and a per-image refund given once (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from easel.accounts import ledger
from easel.api.state import AppState
from easel.catalog import load_catalog
from easel.clock import utcnow
from easel.db.tables import Order
from easel.media.encoding import GeneratedImage
from easel.media.video import encode_animation
from easel.safety.classifier import INPUT_SIZE, frames_of, nsfw_scores
from easel.storage import LocalStorage
from easel.storage.s3 import S3Storage
from easel.worker.outputs import SafetyPolicy, policy_for, screen, store_outputs
from tests.support.app import new_account
from tests.support.orders import submit_order
from tests.support.s3 import CREDENTIALS

RNG = np.random.default_rng(0)
SYNTHETIC = {
    "grey": Image.new("RGB", (128, 128), (128, 128, 128)),
    "skin tone": Image.new("RGB", (128, 128), (230, 180, 150)),
    "noise": Image.fromarray(RNG.integers(0, 255, (128, 128, 3), dtype=np.uint8)),
    "gradient": Image.fromarray(
        np.tile(np.linspace(0, 255, 128, dtype=np.uint8)[None, :, None], (128, 1, 3))
    ),
}


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> GeneratedImage:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    kind = {"PNG": "image/png", "GIF": "image/gif"}[fmt]
    return GeneratedImage(buf.getvalue(), kind, 1, image.width, image.height)


def test_synthetic_images_score_safe_and_batching_changes_nothing() -> None:
    scores = nsfw_scores(list(SYNTHETIC.values()))
    print("open_nsfw scores:", dict(zip(SYNTHETIC, scores, strict=True)))
    assert all(0 <= s < 0.5 for s in scores)
    assert [nsfw_scores([image])[0] for image in SYNTHETIC.values()] == pytest.approx(
        scores, abs=1e-4
    )


def test_clips_are_checked_by_sampled_frames() -> None:
    frames = [Image.new("RGB", (64, 64), (i * 10, 0, 0)) for i in range(20)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    sampled = frames_of(buf.getvalue(), "image/gif", every=8)
    assert [f.getpixel((0, 0))[0] // 10 for f in sampled] == [0, 8, 9, 16, 19]
    # A clip of another size than asked (as a provider may send): ffmpeg selects the frames and
    # scales them to the classifier's input, whole frames whatever the clip's size.
    odd = [Image.new("RGB", (96, 48), (i * 10, 0, 0)) for i in range(20)]
    clip = encode_animation(odd, "mp4", 8, 1, {})
    sampled = frames_of(clip.data, "video/mp4", every=8)
    assert {f.size for f in sampled} == {INPUT_SIZE}
    assert [round(f.getpixel((32, 32))[0] / 10) for f in sampled] == [0, 8, 9, 16, 19]
    assert nsfw_scores(sampled, chunk=2) == pytest.approx(nsfw_scores(sampled), abs=1e-4)


def test_an_output_that_cannot_be_decoded_is_held() -> None:
    broken = [
        GeneratedImage(b"\x00\x00\x00\x18ftypmp42 not a clip", "video/mp4", 1, 64, 64),
        GeneratedImage(b"\x89PNG\r\n\x1a\n truncated", "image/png", 1, 64, 64),
    ]
    held = screen(broken, SafetyPolicy(0.9, "flag"))
    assert [(s.safety, s.score) for s in held] == [("blocked", None), ("blocked", None)]


def test_each_action_on_an_output() -> None:
    still = encoded(SYNTHETIC["noise"])
    gif = encoded(SYNTHETIC["grey"], "GIF", save_all=True, append_images=[SYNTHETIC["noise"]])
    # Threshold 0: everything scores above it.
    flagged = screen([still], SafetyPolicy(0.0, "flag"))
    assert (flagged[0].safety, flagged[0].image) == ("flagged", still)
    blurred = screen([still, gif], SafetyPolicy(0.0, "blur"))
    assert [s.safety for s in blurred] == ["blurred", "blocked"]  # a clip is held, not blurred
    with Image.open(io.BytesIO(blurred[0].image.data)) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert np.abs(np.diff(pixels, axis=1)).mean() < 5  # noise has ~85
    assert [s.safety for s in screen([still], SafetyPolicy(0.0, "block"))] == ["blocked"]
    passed = screen([still], SafetyPolicy(0.9, "block"))[0]
    assert passed.safety is None and passed.score is not None and passed.score < 0.9
    assert screen([still], None)[0].score is None  # not asked: not checked


@pytest.mark.anyio
async def test_a_blocked_image_is_refunded_once(app_state: AppState) -> None:
    account, _ = await new_account(app_state, "standard", topup=2)
    now = utcnow()
    async with app_state.db.transaction() as session:
        await ledger.ensure_grant(session, account.id, app_state.catalog.plans["standard"], now)
        await ledger.debit(session, account.id, "ORD-1", 301, now)  # 300 plan + 1 top-up
        assert await ledger.refund_part(session, "ORD-1", 2, now, "blocked") == 2
    async with app_state.db.transaction() as session:
        assert await ledger.refund_part(session, "ORD-1", 2, now, "blocked") == 0
        left = await ledger.balance(session, account.id, now)
    assert (left.plan, left.topup) == (1, 2)  # the top-up credit first, then one plan credit


def test_which_orders_are_checked() -> None:
    plans = load_catalog().plans
    optional, required = plans["pro"], replace(plans["pro"], safety_optional=False)
    assert policy_for(optional, asked=False, force=False) is None  # seed 001's safety_check false
    assert policy_for(optional, asked=True, force=False) == SafetyPolicy(0.8, "block")
    assert policy_for(required, asked=False, force=False) is not None  # the plan requires it
    assert policy_for(optional, asked=False, force=True) is not None  # EASEL_SAFETY_FORCE
    strict = replace(optional, safety_threshold=0.3, safety_action="blur")
    assert policy_for(strict, asked=True, force=False) == SafetyPolicy(0.3, "blur")


def test_blocked_outputs_are_kept_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = LocalStorage(tmp_path, "secret", "http://easel.test", 60)
    still = encoded(SYNTHETIC["noise"])
    stored = store_outputs(storage, "ORD-1", screen([still, still], SafetyPolicy(0.0, "block")))
    again = store_outputs(storage, "ORD-1", screen([still], SafetyPolicy(0.0, "block")))
    keys = [o.storage_key for o in stored]
    assert all(k.startswith("private/ORD-1/") and k.endswith(".png") for k in keys)
    assert len({*keys, again[0].storage_key}) == 3  # random names, not <order>/<index>
    assert storage.get(keys[0]) == still.data
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    s3 = S3Storage("outputs", region="us-east-1", public_base="https://cdn.example.com")
    assert s3.url("ORD-1/0.png") == "https://cdn.example.com/ORD-1/0.png"
    held = s3.url(keys[0])
    assert not held.startswith("https://cdn.example.com") and "Signature" in held


@pytest.mark.anyio
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_an_order_that_does_not_say_is_checked(app_state: AppState) -> None:
    account, _ = await new_account(app_state, "pro")
    unset = await submit_order(app_state, account)  # the native dialect has no such field
    off = await submit_order(app_state, account, safety_check=False)  # as KIE's false
    async with app_state.db.transaction() as session:
        orders = [await session.get(Order, i) for i in (unset, off)]
    plan = app_state.catalog.plans["pro"]
    asked = [o.safety_check for o in orders if o is not None]
    assert asked == [True, False]
    assert policy_for(plan, asked[0], force=False) is not None
    assert policy_for(plan, asked[1], force=False) is None  # pro lets a request turn it off
