"""EaselError and validation errors -> HTTP, in each dialect's own error shape. The one place.

Each dialect module offers `error_response(exc) -> JSONResponse`; `install` maps path prefixes to
them, so a bad key on /v1/... gets OpenAI's shape and on /api/v1/tasks/... the task API's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from easel.errors import Busy, EaselError, InvalidRequest

BUSY_MESSAGE = (
    "the server has no database connection free right now (EASEL_DB_POOL_SIZE); nothing was "
    "charged or queued: send the request again after Retry-After seconds"
)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def explain_validation(exc: RequestValidationError) -> InvalidRequest:
    """The first problem, phrased as what to change."""
    err = exc.errors()[0]
    field, kind = _field(tuple(err.get("loc", ()))), err.get("type", "")
    if kind == "missing":
        message = f"{field} is required"
    elif kind == "extra_forbidden":
        message = f"unknown field {field!r}; remove it (see the API docs for accepted fields)"
    elif kind == "json_invalid":
        message = "the body is not valid JSON"
    elif kind in ("model_attributes_type", "dict_type"):
        message = "the body must be a JSON object"
    else:
        message = f"{field}: {err.get('msg', 'invalid value')}"
    return InvalidRequest(message, param=field)


def native_body(exc: EaselError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.param:
        error["param"] = exc.param
    return {"ok": False, "error": error}


Shape = Callable[[EaselError], JSONResponse]


def native_response(exc: EaselError) -> JSONResponse:
    return JSONResponse(native_body(exc), status_code=exc.status_code)


def install(app: FastAPI, shapes: Sequence[tuple[str, Shape]] = ()) -> None:
    """`shapes`: (path prefix, renderer) pairs; other paths get the native shape."""

    def render(request: Request, exc: EaselError) -> JSONResponse:
        path = request.url.path
        shape = next((s for prefix, s in shapes if path.startswith(prefix)), native_response)
        response = shape(exc)
        if exc.retry_after is not None:
            response.headers["retry-after"] = str(exc.retry_after)
        return response

    @app.exception_handler(EaselError)
    async def _easel(request: Request, exc: EaselError) -> JSONResponse:
        return render(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return render(request, explain_validation(exc))

    @app.exception_handler(PoolTimeout)
    async def _pool(request: Request, exc: PoolTimeout) -> JSONResponse:
        return render(request, Busy(BUSY_MESSAGE))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, EaselError):  # e.g. the body limit, hit while parsing
            return render(request, exc.__cause__)
        error = EaselError(str(exc.detail))
        error.status_code = exc.status_code
        error.code = {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        return render(request, error)
