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
from pydantic import BaseModel
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from easel.errors import Busy, EaselError, InvalidRequest

# What each status means, as /openapi.json describes it.
STATUS_MEANINGS = {
    400: "Invalid request: the message says what to change",
    401: "Missing, unknown or revoked API key",
    402: "Not enough credits",
    403: "The plan does not allow this (API access, model, animation, images per order)",
    404: "Not found in this account",
    409: "Conflict: an Idempotency-Key or external id used for another request",
    413: "The body is larger than EASEL_MAX_BODY_BYTES",
    422: "Invalid request: the message names the field and says what to change",
    429: "Rate or quota limit: see the message (and Retry-After where given)",
    500: "The order failed; its credits were refunded",
    503: "Busy: no database connection free; nothing was charged; retry after Retry-After",
    504: "The order was not ready within the wait; it goes on (charged once)",
}
NATIVE_STATUSES = (401, 402, 403, 404, 409, 413, 422, 429, 503)


def error_responses(model: type[BaseModel], statuses: Sequence[int]) -> dict[int | str, Any]:
    """`responses=` for a router: each status with the dialect's error body."""
    return {status: {"model": model, "description": STATUS_MEANINGS[status]} for status in statuses}


class NativeErrorDetail(BaseModel):
    code: str
    message: str
    param: str | None = None


class NativeError(BaseModel):
    """The native API's error body (also for the routes every API shares)."""

    ok: bool = False
    error: NativeErrorDetail


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
