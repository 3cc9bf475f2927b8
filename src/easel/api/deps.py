"""Annotated dependencies that keep route signatures short."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from easel.accounts.keys import authenticate, last_used_is_stale, touch_key
from easel.api.state import AppState
from easel.clock import utcnow
from easel.db.tables import Account, ApiKey
from easel.errors import ClientGone, Forbidden, Unauthorized

log = logging.getLogger(__name__)
T = TypeVar("T")

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


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result, unless the client disconnects first: then `work` is cancelled at once
    (a waiting request leaves nothing behind) and ClientGone is raised. Call it once the request
    body has been read."""

    async def left() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(left())
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        for pending in (task, watcher):
            try:
                await pending
            except asyncio.CancelledError:
                pass
            except Exception:
                if pending is watcher:
                    log.debug("disconnect watcher ended", exc_info=True)
    if not task.cancelled():
        return task.result()  # done (perhaps just as the client left: the answer is ready)
    log.info("client left while waiting", extra={"action": "client_gone", "path": request.url.path})
    raise ClientGone("the client closed the connection")
