"""EASEL_PROMPT_CLASSIFIER: a prompt the operator's text classifier refuses answers 400
content_policy in each dialect's shape with nothing charged; another prompt is queued; a check
that runs out of time answers 503 (fail closed) or passes (fail open)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from easel.config import Settings
from easel.db.status import OrderStatus
from easel.db.tables import Order
from tests.support.app import app_client, auth, new_account
from tests.support.audit import nothing_happened
from tests.support.seeds import SEED_000_BODY, SEED_001_BODY
from tests.support.tiny_classifier import build_tiny_classifier, label_scores

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]
REFUSED, ACCEPTED = "a lighthouse at dusk", "a red fox in the snow"


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The tiny random model, with the label it scores higher for REFUSED than for ACCEPTED as
    the refused one and a threshold halfway between the two scores."""
    folder = build_tiny_classifier(tmp_path_factory.mktemp("models") / "tiny-classifier")
    refused, accepted = label_scores(folder, REFUSED), label_scores(folder, ACCEPTED)
    label = max(refused, key=lambda name: refused[name] - accepted[name])
    assert refused[label] - accepted[label] > 0.01  # the prompts tell apart
    return {
        "prompt_classifier": str(folder),
        "prompt_classifier_labels": [label],
        "prompt_classifier_threshold": (refused[label] + accepted[label]) / 2,
    }


async def test_refused_prompt_charges_nothing_and_accepted_one_is_queued(
    settings: Settings, classifier: dict[str, object]
) -> None:
    async with app_client(settings.model_copy(update=classifier)) as (client, state):
        account, key = await new_account(state, "pro")
        body = SEED_000_BODY | {"prompt": REFUSED, "webhook_url": None}
        r = await client.post("/api/v1/generate", json=body, headers=auth(key))
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "content_policy" and "classifier" in error["message"]
        r = await client.post(
            "/api/v1/qwen/generate", json=SEED_001_BODY | {"prompt": REFUSED}, headers=auth(key)
        )
        assert (r.status_code, r.json()["code"]) == (400, 400) and "policy" in r.json()["msg"]
        r = await client.post(
            "/v1/images/generations",
            json={"model": "dall-e-3", "prompt": REFUSED},
            headers=auth(key),
        )
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "content_policy_violation"
        await nothing_happened(state, account.id, 800)
        assert state.prompt_classifier is not None and state.prompt_classifier.runs == 3

        body = SEED_000_BODY | {"prompt": ACCEPTED, "webhook_url": None}
        r = await client.post("/api/v1/generate", json=body, headers=auth(key))
        assert r.status_code == 200, r.text
        async with state.db.transaction() as s:
            orders = list(await s.scalars(select(Order).where(Order.account_id == account.id)))
        assert [(o.prompt, o.status) for o in orders] == [(ACCEPTED, OrderStatus.PENDING)]


@pytest.mark.parametrize("on_error", ["closed", "open"])
async def test_a_check_out_of_time_fails_closed_or_open(
    settings: Settings, classifier: dict[str, object], on_error: str
) -> None:
    late = classifier | {
        "prompt_classifier_timeout": 1e-6,
        "prompt_classifier_on_error": on_error,
    }
    async with app_client(settings.model_copy(update=late)) as (client, state):
        account, key = await new_account(state, "pro")
        body = SEED_000_BODY | {"prompt": REFUSED, "webhook_url": None}
        r = await client.post("/api/v1/generate", json=body, headers=auth(key))
        if on_error == "closed":
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["code"] == "safety_unavailable" and "longer than" in error["message"]
            assert r.headers["retry-after"]
            await nothing_happened(state, account.id, 800)
        else:
            assert r.status_code == 200, r.text  # the operator chose to pass unchecked prompts


async def test_labels_the_model_lacks_fail_closed(
    settings: Settings, classifier: dict[str, object]
) -> None:
    wrong = classifier | {"prompt_classifier_labels": ["nsfw"]}
    async with app_client(settings.model_copy(update=wrong)) as (client, state):
        account, key = await new_account(state, "pro")
        body = SEED_000_BODY | {"prompt": ACCEPTED, "webhook_url": None}
        for _ in range(2):  # the second answers without loading the model again
            r = await client.post("/api/v1/generate", json=body, headers=auth(key))
            assert r.status_code == 503, r.text
            assert "ClassifierError" in r.json()["error"]["message"]
        await nothing_happened(state, account.id, 800)
