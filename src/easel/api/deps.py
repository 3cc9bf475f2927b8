"""Annotated dependencies that keep route signatures short."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from easel.accounts.keys import authenticate, last_used_is_stale, touch_key
from easel.api.state import AppState
from easel.clock import utcnow
from easel.db.tables import Account, ApiKey
from easel.errors import Forbidden, Unauthorized

API_ACCESS_MESSAGE = (
    "API access requires a paid subscription (Standard and above); "
    "this account's plan is {plan}. Upgrade the plan or use the web console"
)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.easel
    return state


State = Annotated[AppState, Depends(get_state)]


async def get_session(state: State) -> AsyncIterator[AsyncSession]:
    async with state.db.transaction() as session:
        yield session


async def get_read_session(state: State) -> AsyncIterator[AsyncSession]:
    async with state.db.transaction(readonly=True) as session:
        yield session


# scope="function": the transaction commits before the response is sent.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]


def api_key_from(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = request.headers.get("x-api-key", "").strip()
    if key:
        return key
    raise Unauthorized()


async def current_account(request: Request, state: State) -> AsyncIterator[Account]:
    """The key's account, within its plan's rate limits; it holds one of the key's and the
    account's open-request slots until the response has been sent."""
    plain = api_key_from(request)
    async with state.db.transaction(readonly=True) as session:
        account, key = await authenticate(session, plain)
    plan = state.catalog.plans.get(account.plan)
    if plan is None or not plan.api_access:
        raise Forbidden(API_ACCESS_MESSAGE.format(plan=account.plan))
    if not state.settings.rate_limits:
        await _touch(state, key)
        yield account
        return
    await state.limits.hit(plan, account.id, key.id)
    await _touch(state, key)
    async with state.limits.open_request(plan, account.id, key.id):
        yield account


async def _touch(state: AppState, key: ApiKey) -> None:
    now = utcnow()
    if last_used_is_stale(key, now):
        async with state.db.transaction() as session:
            await touch_key(session, key.id, now)


CurrentAccount = Annotated[Account, Depends(current_account)]
