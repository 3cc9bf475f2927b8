"""The one exception tree of Easel.

    EaselError                 500 internal_error
    ├── InvalidRequest         422 invalid_request   (the message says what to change)
    ├── Unauthorized           401 unauthorized      (missing, unknown or revoked API key)
    ├── Forbidden              403 forbidden         (plan gating, API access off)
    ├── QuotaExceeded          402 quota_exceeded    (not enough credits)
    ├── NotFound               404 not_found
    ├── Conflict               409 conflict          (idempotency key reused with another body)
    ├── PayloadTooLarge        413 payload_too_large (request body over EASEL_MAX_BODY_BYTES)
    ├── RateLimited            429 rate_limited      (requests per minute or open requests)
    ├── ModelUnavailable       503 model_unavailable (weights cannot be loaded; worker side)
    ├── NoWorker               503 no_worker         (EASEL_UNSERVED=refuse: no worker serves it)
    ├── Busy                   503 busy              (no database connection free in time; retry)
    └── SafetyUnavailable      503 safety_unavailable (the prompt classifier failed or timed out)

Each class's docstring is its default message. HTTP rendering happens in `api/errors.py` only.
"""

from __future__ import annotations


class EaselError(Exception):
    """Internal error."""

    status_code = 500
    code = "internal_error"

    retry_after: int | None = None  # seconds, sent as Retry-After

    def __init__(self, message: str | None = None, *, param: str | None = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        self.param = param
        super().__init__(self.message)


class InvalidRequest(EaselError):
    """The request is invalid."""

    status_code = 422
    code = "invalid_request"


class ContentPolicy(EaselError):
    """The prompt is not allowed by this server's content policy."""

    status_code = 400
    code = "content_policy"


class Unauthorized(EaselError):
    """Missing or invalid API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`."""

    status_code = 401
    code = "unauthorized"


class Forbidden(EaselError):
    """Your plan does not allow this."""

    status_code = 403
    code = "forbidden"


class QuotaExceeded(EaselError):
    """Not enough credits left for this order."""

    status_code = 402
    code = "quota_exceeded"


class NotFound(EaselError):
    """Not found."""

    status_code = 404
    code = "not_found"


class Conflict(EaselError):
    """The request conflicts with an earlier one."""

    status_code = 409
    code = "conflict"


class PayloadTooLarge(EaselError):
    """The request body is too large."""

    status_code = 413
    code = "payload_too_large"


class ModelUnavailable(EaselError):
    """The model's weights could not be loaded."""

    status_code = 503
    code = "model_unavailable"


class NoWorker(EaselError):
    """No live worker serves this model now; try again later."""

    status_code = 503
    code = "no_worker"

    def __init__(self, message: str | None = None, *, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Busy(EaselError):
    """The server is busy; try again in a moment."""

    status_code = 503
    code = "busy"

    def __init__(self, message: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SafetyUnavailable(EaselError):
    """The prompt could not be checked against the content policy now; try again."""

    status_code = 503
    code = "safety_unavailable"

    def __init__(self, message: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ClientGone(EaselError):
    """The client closed the connection while the request waited; nobody reads this answer."""

    status_code = 499  # nginx's "client closed request"
    code = "client_closed"


class RateLimited(EaselError):
    """Too many requests; slow down."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
