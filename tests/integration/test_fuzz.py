"""Schemathesis against /openapi.json: every route, with a valid key, answers every generated
request without a 5xx and with a body its declared schema accepts (a bounded run, on PostgreSQL,
the stricter database: it refuses NUL in text)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as fuzzing
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from easel.api.app import create_app
from easel.api.state import AppState
from easel.config import Settings
from easel.db.migrate import migrate
from tests.support import databases
from tests.support.app import free_port, new_account, running_server

LOOPBACK = "http://127.0.0.1:9/never"  # nothing listens: outbound calls fail at once, locally
URL_FIELDS = ("webhook_url", "callBackUrl", "callback_url", "image")
EXAMPLES = 25


def stay_local(body: Any) -> Any:
    """The fuzzer's URLs could name any host; every outbound URL goes to loopback instead."""
    if isinstance(body, dict):
        for name in URL_FIELDS:
            if isinstance(body.get(name), str) and "://" in body[name]:
                body[name] = LOOPBACK
        if isinstance(body.get("image_urls"), list):
            body["image_urls"] = [LOOPBACK for _ in body["image_urls"]]
    return body


FUZZ_SETTINGS = Settings(
    secret_key="fuzz-secret",
    host="127.0.0.1",
    rate_limits=False,
    openai_wait_timeout=0.2,
    events_max_duration=0.5,
    allowed_networks=["127.0.0.0/8"],
    reference_fetch_timeout=1.0,
)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, pg_template: databases.PostgresTemplate
) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    url = pg_template.copy()
    settings = FUZZ_SETTINGS.model_copy(
        update={"data_dir": tmp / "data", "database_url": url, "port": free_port()}
    )

    async def prepare() -> str:
        state = AppState.build(settings)
        try:
            await migrate(state.db)
            _, key = await new_account(state, "mega", topup=1_000_000)
            return key
        finally:
            await state.close()

    key = asyncio.run(prepare())
    try:
        with running_server(settings) as base:
            yield base, key
    finally:
        pg_template.drop(url)


# The document the server will serve (built without a database: it depends on settings only).
schema = schemathesis.openapi.from_dict(create_app(FUZZ_SETTINGS).openapi())


def no_server_error(ctx: CheckContext, response: Any, case: Any) -> bool | None:
    """No 5xx but the documented ones of a server without a worker: OpenAI's 504 (every wait
    times out) and /readyz's 503 (not ready, with its reasons)."""
    if response.status_code == 504 and case.path.startswith("/v1/images/"):
        assert response.json()["error"]["type"] == "timeout"
        return True
    if response.status_code == 503 and case.path == "/readyz":
        assert any("worker" in reason for reason in response.json()["reasons"])
        return True
    return not_a_server_error(ctx, response, case)


@schema.parametrize()
@fuzzing(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_5xx_and_bodies_match_their_schema(case: Any, server: tuple[str, str]) -> None:
    case.body = stay_local(case.body)
    case.call_and_validate(
        base_url=server[0],
        headers={"Authorization": f"Bearer {server[1]}"},
        checks=[no_server_error, response_schema_conformance],
        timeout=30,
    )
