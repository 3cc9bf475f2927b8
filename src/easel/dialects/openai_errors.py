"""What the OpenAI Images and Videos APIs share: OpenAI's error body and its response, and the
bound on a multipart form's text fields."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from easel.config import Settings
from easel.errors import EaselError, QuotaExceeded, RateLimited, Unauthorized


class WaitTimedOut(EaselError):
    """The image was not ready within the wait timeout; the order goes on."""

    status_code = 504
    code = "timeout"


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """OpenAI's error body; every error also carries `x-should-retry`."""

    error: OpenAIErrorDetail


def error_response(exc: EaselError) -> JSONResponse:
    status = {422: 400, 402: 429}.get(exc.status_code, exc.status_code)
    code: str | None = exc.code
    if isinstance(exc, Unauthorized):
        kind, code = "invalid_request_error", "invalid_api_key"
    elif isinstance(exc, QuotaExceeded):
        kind = code = "insufficient_quota"
    elif isinstance(exc, RateLimited):
        kind, code = "requests", "rate_limit_exceeded"
    elif isinstance(exc, WaitTimedOut):
        kind = "timeout"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    if code == "content_policy":
        code = "content_policy_violation"  # OpenAI's code for a refused prompt or image
    error = {"message": exc.message, "type": kind, "param": exc.param, "code": code}
    # Nothing charged and worth a retry (Busy, RateLimited): the SDK may retry; else it must not.
    retry = "true" if exc.retry_after is not None else "false"
    return JSONResponse({"error": error}, status_code=status, headers={"x-should-retry": retry})


def form_field_bytes(settings: Settings) -> int:
    """The most bytes one text field of a multipart form may have: the longest prompt or webhook
    URL at 4 bytes a character (UTF-8), and room for the shorter fields."""
    return 4 * max(settings.max_prompt_chars, settings.max_webhook_url_chars) + 4096
