"""Prompt enhancement and the safety check end to end on tiny pipelines: an enhancer too slow is
skipped, scores are stored and shown, a blocked output is held and refunded per image, an order
whose every output is blocked fails and is refunded once, blur stores a blurred file, and seed 000's
(llm_enhance) and seed 001's (safety_check) examples complete."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from easel.config import Settings
from easel.db.tables import Account, LedgerEntry, Output
from easel.storage import MissingObject
from tests.support.app import app_client, auth, new_account
from tests.support.catalogs import tiny_catalog
from tests.support.chat_server import chat_server
from tests.support.seeds import SEED_000_BODY
from tests.support.worker import running_worker, wait_status

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]
PROMPT = "a lighthouse on a cliff at dusk"
SMALL = {"width": 256, "height": 384}


def with_catalog(settings: Settings, path: Path, sdxl: Path, extra: str, **more: Any) -> Settings:
    extra = "[products.batch_3]\nimages = 3\n" + extra
    catalog = tiny_catalog(path, sdxl, side=256, extra=extra)
    return settings.model_copy(update={"catalog": catalog, **more})


def plan(name: str, action: str, threshold: float, optional: bool = False) -> str:
    return (
        f"[plans.{name}]\nsafety_action = {json.dumps(action)}\n"
        f"safety_threshold = {threshold}\nsafety_optional = {json.dumps(optional)}\n"
    )


def sharpness(data: bytes) -> float:
    """Mean absolute difference of horizontally neighbouring pixels."""
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    return float(np.abs(np.diff(pixels, axis=1)).mean())


async def ledger_rows(state: Any, order_id: str) -> list[tuple[str, int]]:
    async with state.db.transaction() as s:
        rows = await s.execute(
            select(LedgerEntry.kind, LedgerEntry.amount).where(LedgerEntry.order_id == order_id)
        )
        return sorted((kind, amount) for kind, amount in rows.all())


async def stored_outputs(state: Any, order_id: str) -> list[Output]:
    async with state.db.transaction() as s:
        rows = await s.scalars(select(Output).where(Output.order_id == order_id))
        return sorted(rows, key=lambda o: o.index)


async def test_enhance_and_safety_end_to_end(
    settings: Settings, tmp_path: Path, tiny_sdxl: Path
) -> None:
    # Run 1: pro flags everything (threshold 0); the enhancer is a chat server too slow to wait for.
    with chat_server(delay=3.0) as slow:
        first = with_catalog(
            settings,
            tmp_path / "first.toml",
            tiny_sdxl,
            plan("pro", "flag", 0.0),
            enhancer="openai",
            enhancer_base_url=slow.url,
            enhance_timeout_seconds=0.5,
        )
        async with app_client(first) as (client, state):
            _, pro = await new_account(state, "pro")
            body = {"style": "general", "product_type": "batch_3", "prompt": PROMPT, "seed": 1234}
            r = await client.post(
                "/api/v1/generate", json=body | {"llm_enhance": True}, headers=auth(pro)
            )
            flagged_id = r.json()["order_id"]
            async with running_worker(state):
                flagged = await wait_status(client, flagged_id, auth(pro))
            originals = [(await client.get(u)).content for u in flagged["output_urls"]]
    assert flagged["status"] == "completed", flagged
    assert flagged["enhance"] == {
        "status": "skipped",
        "reason": "the enhancer took longer than 0.5 s",
        "negative_prompt": None,
    }
    assert flagged["enhanced_prompt"] is None
    scores = [o["nsfw_score"] for o in flagged["outputs"]]
    assert all(0 <= s <= 1 for s in scores)
    seen = [(o["nsfw_detected"], o["safety"]) for o in flagged["outputs"]]
    assert seen == [(True, "flagged")] * 3
    print("tiny pipeline's scores:", scores)

    # Run 2: pro blocks the highest-scoring of the three, mega blocks everything, standard blurs
    # everything; the enhancer is the default template.
    ranked = sorted(scores, reverse=True)
    assert ranked[0] - ranked[1] > 1e-5, ranked  # far above a batch's rounding
    threshold = (ranked[0] + ranked[1]) / 2
    second = with_catalog(
        settings,
        tmp_path / "second.toml",
        tiny_sdxl,
        plan("pro", "block", threshold)
        + plan("mega", "block", 0.0)
        + plan("standard", "blur", 0.0),
    )
    async with app_client(second) as (client, state):
        _, pro = await new_account(state, "pro")
        _, mega = await new_account(state, "mega")
        _, standard = await new_account(state, "standard")
        ids = {}
        for name, key, sent in [
            ("some", pro, body),
            ("all", mega, body | {"product_type": "static_image"}),
            # Seed 000's body, smaller (768x1152 costs the tiny pipeline seconds on a CPU).
            ("seed000", standard, SEED_000_BODY | {"webhook_url": None} | SMALL),
        ]:
            r = await client.post("/api/v1/generate", json=sent, headers=auth(key))
            assert r.status_code == 200, r.text
            ids[name] = r.json()["order_id"]
        async with running_worker(state):
            some = await wait_status(client, ids["some"], auth(pro))
            every = await wait_status(client, ids["all"], auth(mega))
            seed000 = await wait_status(client, ids["seed000"], auth(standard))
            r = await client.post(
                "/v1/images/generations",
                json={"model": "sdxl-turbo", "prompt": PROMPT, "size": "256x256"},
                headers=auth(standard),
            )
            openai_images = r.json()["data"]
        held = await stored_outputs(state, ids["some"])
        some_ledger = await ledger_rows(state, ids["some"])
        all_ledger = await ledger_rows(state, ids["all"])
        account = (await client.get("/api/v1/account", headers=auth(pro))).json()
        blurred = (await client.get(seed000["output_urls"][0])).content
        top = scores.index(ranked[0])
        [held_key] = [o.storage_key for o in held if o.safety == "blocked"]
        held_bytes = state.storage.get(held_key)
        # The operator's review: the two blocked outputs are listed (an ordinary key gets 404).
        admin_account, admin = await new_account(state, "mega")
        async with state.db.transaction() as session:
            row = await session.get(Account, admin_account.id)
            assert row is not None
            row.is_admin = True
        assert (await client.get("/api/v1/admin/review", headers=auth(pro))).status_code == 404
        listing = (await client.get("/api/v1/admin/review", headers=auth(admin))).json()
        listed = {(i["order_id"], i["index"]): i for i in listing["items"]}
        first_run = {(flagged_id, i) for i in range(3)}  # run 1's flagged outputs
        unblurred = {k for k, i in listed.items() if i["safety"] != "blurred"}
        assert unblurred == {(ids["some"], top), (ids["all"], 0), *first_run}, listed
        assert listed[(ids["seed000"], 0)]["safety"] == "blurred"  # its original is held
        assert listed[(ids["all"], 0)]["safety"] == "blocked"
        release = f"/api/v1/admin/review/{listed[(ids['all'], 0)]['output_id']}/release"
        confirm = f"/api/v1/admin/review/{listed[(ids['some'], top)]['output_id']}/confirm"
        r = await client.post(release, headers=auth(admin))
        assert r.json() == {
            "output_id": listed[(ids["all"], 0)]["output_id"],
            "safety": "released",
            "charged": 1,
        }
        assert (await client.post(release, headers=auth(admin))).status_code == 409
        assert (await client.post(confirm, headers=auth(admin))).json()["safety"] == "confirmed"
        released = await wait_status(client, ids["all"], auth(mega))
        released_png = (await client.get(released["output_urls"][0])).content
        mega_credits = (await client.get("/api/v1/account", headers=auth(mega))).json()["credits"]
        after_review = (await client.get("/api/v1/admin/review", headers=auth(admin))).json()
        with pytest.raises(MissingObject):
            state.storage.get(held_key)

    # One of three blocked: two shown, the third held for review, one image's credit back.
    assert some["status"] == "completed", some
    assert [o["seed"] for o in some["outputs"]] == [1234 + i for i in range(3) if i != top]
    assert [(o.index, o.safety) for o in held if o.safety == "blocked"] == [(top, "blocked")]
    assert held_bytes[:8] == b"\x89PNG\r\n\x1a\n"
    assert some_ledger == [("debit", -3), ("refund_part", 1)]
    assert account["credits"]["total"] == 800 - 2
    # Every output blocked: failed with content_policy, refunded once.
    assert every["status"] == "failed"
    assert every["error"]["code"] == "content_policy"
    assert all_ledger == [("debit", -1), ("refund", 1)]
    # Seed 000's example (llm_enhance): the template enhancer's prompt, blurred by standard's plan.
    assert seed000["status"] == "completed", seed000
    assert seed000["enhance"]["status"] == "done"
    template = "{prompt}, guofeng, traditional Chinese painting, ink wash, elegant composition"
    assert seed000["enhanced_prompt"] == template.format(prompt=SEED_000_BODY["prompt"])
    assert seed000["outputs"][0]["safety"] == "blurred"
    assert sharpness(blurred) < 0.2 * min(sharpness(o) for o in originals)
    with Image.open(io.BytesIO(blurred)) as png:
        meta = json.loads(png.text["parameters"])
    assert meta["prompt"] == seed000["enhanced_prompt"]
    assert meta["original_prompt"] == SEED_000_BODY["prompt"]
    # OpenAI Images: each image says whether the check flagged it (blurred here).
    assert [i["nsfw_detected"] for i in openai_images] == [True]
    # Released: the failed order completes with its image, charged again; confirmed: gone.
    assert released["status"] == "completed" and "error" not in released
    assert released_png[:8] == b"\x89PNG\r\n\x1a\n"
    assert mega_credits["total"] == 2000 - 1
    left = {i["order_id"] for i in after_review["items"] if i["safety"] != "blurred"}
    assert left == {flagged_id}
