"""JSON request bodies are checked before anyone validates them: UTF-8, bounded in members and
depth, and every string is text (`orders.text`); junk with thousands of keys was already refused
as it arrived (`api.limits.BodyLimit`). The error names the field, in the dialect's shape."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from easel.api.errors import error_responses
from easel.api.limits import is_json
from easel.config import Settings
from easel.errors import InvalidRequest
from easel.orders.text import check_text


def _field(path: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in path) or "body"


def parse_json_body(body: bytes, settings: Settings) -> Any:
    """The parsed body, or InvalidRequest saying what to change."""
    members, depth = settings.max_json_members, settings.max_json_depth
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"the body is not valid UTF-8 (byte {exc.start}); send JSON encoded as UTF-8"
        ) from None
    except json.JSONDecodeError as exc:
        message = f"the body is not valid JSON: {exc.msg} at character {exc.pos}"
        raise InvalidRequest(message) from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest(f"the JSON body nests deeper than {depth} levels") from None
    check_json(data, members, depth)
    return data


def check_json(data: Any, max_members: int, max_depth: int) -> None:
    """Members, depth and text of a parsed body; walks it once, iteratively."""
    seen = 0
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > max_depth:
            raise InvalidRequest(
                f"{_field(path)} nests deeper than {max_depth} levels", param=_field(path)
            )
        if isinstance(value, dict):
            seen += len(value)
            for key, item in value.items():
                check_text(key, _field((*path, key)))
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            seen += len(value)
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
        elif isinstance(value, str):
            check_text(value, _field(path))
        if seen > max_members:
            raise InvalidRequest(
                f"the JSON body has more than {max_members} members (keys and array items); "
                "send only the fields the API documents"
            )


class CheckedRoute(APIRoute):
    """An APIRoute whose path and query values are text and whose JSON body passes
    `parse_json_body`, before anything else reads them."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def checked(request: Request) -> Response:
            for name, value in request.path_params.items():
                if isinstance(value, str):
                    check_text(value, name)
            for name, value in request.query_params.multi_items():
                check_text(name, "a query parameter's name")
                check_text(value, name)
            json_body = is_json(request.headers.get("content-type", ""))
            if request.method in ("POST", "PUT", "PATCH") and json_body:
                body = await request.body()
                if body:
                    settings: Settings = request.app.state.easel.settings
                    # Starlette's own cache of the parsed body: FastAPI reads it from there.
                    request._json = parse_json_body(body, settings)
            return await handle(request)

        return checked


def api_router(error_model: type[BaseModel], statuses: Sequence[int], **options: Any) -> APIRouter:
    """An APIRouter whose routes check their JSON bodies and declare their error responses
    (`error_model` for each of `statuses`); every dialect's router is one."""
    responses = error_responses(error_model, statuses)
    if 422 not in statuses:  # else FastAPI declares its own 422 body, which no route sends
        responses["4XX"] = {"model": error_model, "description": "Any other client error"}
    return APIRouter(route_class=CheckedRoute, responses=responses, **options)
