"""The SDK against a real server on loopback (a worker on the tiny SDXL): generate and download,
events over a stream that is cut, retries after a lost answer, and each error from a real
refusal."""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

import httpx
import pytest
import uvicorn
from PIL import Image

from easel.api.app import create_app
from easel.api.state import AppState
from easel.client import (
    APIConnectionError,
    AsyncEasel,
    AuthenticationError,
    Conflict,
    Easel,
    InvalidRequest,
    NotFound,
    OrderCanceled,
    OrderFailed,
    PlanForbidden,
    QuotaExceeded,
    RateLimited,
    ServerError,
    WaitTimeout,
    models,
)
from easel.config import Settings
from tests.client.conftest import BROKEN_STYLE, STEPS, client_settings
from tests.support.app import free_port
from tests.support.live import Live, LoopThread, live_server
from tests.support.proxy import loopback_proxy
from tests.support.receiver import webhook_receiver

pytestmark = pytest.mark.slow

SMALL = {"width": 256, "height": 256}


def pixels(data: bytes) -> tuple[tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size, image.convert("RGB").tobytes()


def test_generate_and_download_write_the_served_pixels(live: Live, tmp_path: Path) -> None:
    _, key = live.account()
    body = {"style": "anime", "prompt": "a red fox in the snow", "seed": 7} | SMALL
    with Easel(live.base_url, key) as client:
        order = client.generate(**body)
        assert order.created is not None and order.created.cost == 1 and not order.replayed
        files = order.download(tmp_path / "sdk")
        assert order.status == "completed" and order.data is not None
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=live.base_url, headers=headers, timeout=60) as http:
        status = http.get(f"/api/v1/status/{order.id}").json()
        assert status["status"] == "completed", status
        expected = http.get(status["outputs"][0]["url"]).content
    [file] = files
    assert file.path.name == f"{order.id}_0_seed7.png" and file.seed == 7 and file.fetched
    assert (file.width, file.height) == (256, 256)
    assert pixels(file.path.read_bytes()) == pixels(expected)
    assert not list(file.path.parent.glob("*.part"))
    again = Easel(live.base_url, key).order(order.id).download(tmp_path / "sdk")
    assert [f.fetched for f in again] == [False]  # already there: kept, not fetched again


def test_events_fall_back_to_status_reads_when_the_stream_is_cut(live: Live) -> None:
    _, key = live.account()
    with loopback_proxy(live.base_url) as proxy:
        proxy.cut_streams_after(b"event: progress")
        with Easel(proxy.url, key, poll_interval=0.05) as client:
            order = client.generate(style="general", prompt="a kite over the sea", **SMALL)
            events = list(order.events(timeout=120))
    names = [e.name for e in events]
    assert proxy.cut == [f"/api/v1/orders/{order.id}/events"]  # cut mid-order ...
    assert proxy.paths("/api/v1/status/")  # ... then read by status
    assert names[-1] == "completed" and names.count("completed") == 1, names
    assert "progress" in names and names.count("started") == 1, names
    steps = [e.step for e in events if e.name == "progress"]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS, steps  # told once each
    final = events[-1].order
    assert final is not None and final.outputs and final.outputs[0].width == 256


def test_a_lost_answer_is_retried_into_one_order_and_one_charge(live: Live) -> None:
    account_id, key = live.account()
    with loopback_proxy(live.base_url) as proxy, Easel(proxy.url, key) as client:
        proxy.drop_responses("POST", "/api/v1/generate")
        order = client.generate(style="general", prompt="a lighthouse", **SMALL)
        assert proxy.dropped == [("POST", "/api/v1/generate")]
        assert proxy.paths("/api/v1/generate") == ["/api/v1/generate"] * 2
        assert order.replayed  # the second try found the order the first one made
        order.wait(timeout=120)
        credits = client.account().credits.total
    assert live.orders_and_debits(account_id) == (1, 1)
    assert credits == 300 - 1


def test_each_refusal_raises_its_class_with_the_servers_message(live: Live) -> None:
    _, key = live.account()
    _, free_key = live.account("free")
    _, trial_key = live.account("trial")
    with (
        Easel(live.base_url, "cfy-not-a-key") as client,
        pytest.raises(AuthenticationError) as auth,
    ):
        client.account()
    assert auth.value.status_code == 401 and "API key" in auth.value.message
    with Easel(live.base_url, free_key) as client, pytest.raises(PlanForbidden) as plan:
        client.generate(style="turbo", prompt="a fox", **SMALL)
    assert plan.value.status_code == 403 and "subscription" in plan.value.message.lower()
    with Easel(live.base_url, trial_key) as client, pytest.raises(QuotaExceeded) as quota:
        client.generate(style="general", prompt="a fox", **SMALL)
    assert quota.value.code == "quota_exceeded" and "credits" in quota.value.message
    with Easel(live.base_url, key) as client:
        with pytest.raises(InvalidRequest) as invalid:
            client.generate(style="no-such-style", prompt="a fox")
        assert invalid.value.param == "style" and "anime" in invalid.value.message
        with pytest.raises(InvalidRequest) as field:
            client.generate(style="general", prompt="a fox", width=100)
        assert field.value.status_code == 422 and field.value.param == "width"
        with pytest.raises(NotFound) as missing:
            client.orders.get("ORD-20990101-NOTHING")
        assert "ORD-20990101-NOTHING" in missing.value.message
        client.generate(style="general", prompt="one", idempotency_key="k-1", **SMALL)
        with pytest.raises(Conflict) as conflict:
            client.generate(style="general", prompt="another", idempotency_key="k-1", **SMALL)
        assert conflict.value.status_code == 409
        broken = client.generate(style=BROKEN_STYLE, prompt="a fox", **SMALL)
        with pytest.raises(OrderFailed) as failed:
            broken.wait(timeout=120)
        assert failed.value.order.status == "failed" and "does not exist" in failed.value.message
        with live.worker_stopped():
            waiting = client.generate(style="general", prompt="a fox", **SMALL)
            with pytest.raises(WaitTimeout):
                waiting.wait(timeout=0.5)
            assert waiting.cancel().refunded == 1
            with pytest.raises(OrderCanceled):
                waiting.wait(timeout=30)
            with pytest.raises(Conflict):  # already final
                waiting.cancel()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with (
        Easel(f"http://127.0.0.1:{port}", key, max_retries=1) as client,
        pytest.raises(APIConnectionError),
    ):
        client.account()


def test_rate_limited_carries_retry_after(tmp_path: Path, tiny_sdxl: Path) -> None:
    settings = client_settings(tmp_path, tiny_sdxl, rate_limits=True)
    assert settings.catalog is not None
    with open(settings.catalog, "a") as catalog:
        catalog.write("[plans.standard]\nkey_requests_per_minute = 2\n")
    with live_server(settings, worker=False) as server:
        _, key = server.account()
        with Easel(server.base_url, key, max_retries=0) as client:
            client.account()
            client.account()
            with pytest.raises(RateLimited) as limited:
                client.account()
    assert limited.value.status_code == 429 and limited.value.retry_after
    assert "in the last minute" in limited.value.message


@pytest.mark.postgres
def test_server_error_when_the_server_has_no_connection_free(
    postgres_url: str, tmp_path: Path, tiny_sdxl: Path
) -> None:
    pool = {"db_pool_size": 1, "db_pool_overflow": 0, "db_pool_timeout": 0.2}
    settings = client_settings(tmp_path, tiny_sdxl, database_url=postgres_url, **pool)
    with busy_server(settings) as (base, hold):
        client = Easel(base, hold(), max_retries=1)
        with pytest.raises(ServerError) as busy:
            client.generate(style="general", prompt="a fox", **SMALL)
        client.close()
    assert busy.value.status_code == 503 and busy.value.code == "busy"
    assert "nothing was charged" in busy.value.message and busy.value.retry_after == 1


@contextmanager
def busy_server(settings: Settings) -> Iterator[tuple[str, object]]:
    """A server on one event loop with the test; `hold()` makes an account, then takes the
    pool's only connection (until the end) and returns the account's key."""
    port = free_port()
    loop = LoopThread()
    state = AppState.build(settings)
    app = create_app(settings, state)
    app.state.easel = state
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = loop.call(start(server))
    held: list[object] = []

    def hold() -> str:
        from tests.support.app import new_account

        _, key = loop.call(new_account(state, "standard"))
        connection = state.db.connect()
        loop.call(connection.__aenter__())
        held.append(connection)
        return key

    try:
        yield f"http://127.0.0.1:{port}", hold
    finally:
        for connection in held:
            loop.call(connection.__aexit__(None, None, None))  # type: ignore[attr-defined]
        server.should_exit = True
        loop.call(asyncio.wait_for(task, 20))
        loop.call(state.db.dispose())
        loop.close()


async def start(server: uvicorn.Server) -> asyncio.Task[None]:
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
        await asyncio.sleep(0.02)
    return task


def test_lists_account_plans_and_the_webhook_log(live: Live) -> None:
    _, key = live.account()
    with Easel(live.base_url, key) as client, webhook_receiver() as hooks:
        placed = [
            client.generate(style="general", prompt=f"tile {i}", webhook_url=hooks.url, **SMALL)
            for i in range(3)
        ]
        for order in placed:
            order.wait(timeout=120)
        listed = [o.order_id for o in client.orders.list(limit=2)]  # two pages
        assert listed == [o.id for o in reversed(placed)]
        assert [o.order_id for o in islice(client.orders.list(status="completed"), 1)] == [
            placed[-1].id
        ]
        account = client.account()
        assert account.credits.total == 300 - 3 and account.plan == "standard"
        assert {"standard", "pro"} <= {p.id for p in client.plans()}
        hooks.wait_for(3)
        [delivery] = client.webhooks.deliveries(order_id=placed[0].id)
        assert delivery.event == "order.completed" and delivery.state == "delivered"
        again = client.webhooks.redeliver(delivery.id)
        assert again.id == delivery.id
        calls = hooks.wait_for(4)
    from easel.webhooks import verify

    for call in calls:
        assert verify(account.webhook_secret, call.raw, call.headers)["status"] == "completed"
    assert calls[-1].headers["webhook-id"] == delivery.id


def test_the_async_client(live: Live, tmp_path: Path) -> None:
    _, key = live.account()

    async def main() -> None:
        async with AsyncEasel(live.base_url, key) as client:
            order = await client.generate(style="guofeng", prompt="a junk at sea", seed=3, **SMALL)
            names = [event.name async for event in order.events(timeout=120)]
            assert names[-1] == "completed"
            [file] = await order.download(tmp_path)
            assert file.path.name == f"{order.id}_0_seed3.png"
            assert [o.order_id async for o in client.orders.list()] == [order.id]
            assert (await client.account()).credits.total == 299
            assert (await client.orders.get(order.id)).status == "completed"
            with pytest.raises(NotFound):
                await client.order("ORD-20990101-NOTHING").refresh()

    asyncio.run(main())


def test_the_models_follow_openapi(live: Live) -> None:
    """Each native response's schema: every property is a field of its SDK model, and what the
    schema requires, the model requires or defaults."""
    schemas = httpx.get(live.base_url + "/openapi.json").json()["components"]["schemas"]
    pairs = {
        "NativeCreated": models.Created,
        "NativeStatus": models.OrderStatus,
        "NativeOutput": models.Output,
        "NativeEnhance": models.Enhance,
        "NativeLoading": models.LoadingModel,
        "NativeOrderError": models.OrderError,
        "NativeOrderPage": models.OrderPage,
        "NativeCanceled": models.Canceled,
        "NativeCredits": models.Credits,
        "NativeAccount": models.Account,
        "NativePlan": models.Plan,
        "NativePlans": models.PlanList,
        "WebhookDeliveryView": models.WebhookDelivery,
        "WebhookDeliveryLog": models.DeliveryLog,
        "WebhookRedelivered": models.Redelivered,
        "WebhookSecret": models.WebhookSecret,
    }
    newer = {"NativeLoading"}  # only where the server reports model loads
    for name, model in pairs.items():
        if name in newer and name not in schemas:
            continue
        properties = set(schemas[name]["properties"])
        missing = properties - set(model.model_fields)
        assert not missing, f"{model.__name__} lacks {sorted(missing)} of {name}"
        extra = {
            f
            for f, info in model.model_fields.items()
            if f not in properties and info.is_required()
        }
        assert not extra, f"{model.__name__} requires {sorted(extra)}, not in {name}"
