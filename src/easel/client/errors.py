"""Everything the SDK raises, as one tree.

    EaselError                     anything raised by easel.client
    ├── APIConnectionError         the server could not be reached, or the connection dropped,
    │   │                          after every retry
    │   └── APITimeoutError        ... because a request timed out
    ├── APIError                   the server refused the request (status_code, code, message,
    │   │                          param, body); mapped from the API's error code
    │   ├── InvalidRequest         400 / 413 / 422: `param` names the field to change
    │   ├── AuthenticationError    401: missing, unknown or revoked API key
    │   ├── QuotaExceeded          402: not enough credits
    │   ├── PlanForbidden          403: the plan does not allow it
    │   ├── NotFound               404: no such order in this account (or its outputs expired)
    │   ├── Conflict               409: an Idempotency-Key reused with another body, or the order
    │   │                          is already final
    │   ├── RateLimited            429: `retry_after` seconds
    │   └── ServerError            5xx: busy, a model that cannot load, an internal error
    ├── OrderFailed                wait() / download(): the order failed (`order`, `code`)
    │   └── OrderCanceled          ... it was canceled
    └── WaitTimeout                wait() / events() ran past their timeout; the order goes on
                                   (also a TimeoutError)

Requests are retried (connection errors, 429 and 5xx) before any of these is raised. Webhook
signature checks raise `easel.webhooks.WebhookVerificationError` (a ValueError) instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from easel.client.models import OrderStatus


class EaselError(Exception):
    """An Easel client error."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or type(self).__name__).strip()
        super().__init__(self.message)


class APIConnectionError(EaselError):
    """Could not reach the Easel server."""


class APITimeoutError(APIConnectionError):
    """The request to the Easel server timed out."""


class APIError(EaselError):
    """The server refused the request."""

    def __init__(
        self,
        message: str | None = None,
        *,
        status_code: int = 0,
        code: str | None = None,
        param: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.param = param
        self.body = body
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" ({self.param})" if self.param else ""
        return f"{self.status_code} {self.code or 'error'}{where}: {self.message}"


class InvalidRequest(APIError):
    """The request is invalid; `param` names the field."""


class AuthenticationError(APIError):
    """Missing, unknown or revoked API key."""


class QuotaExceeded(APIError):
    """Not enough credits left for this order."""


class PlanForbidden(APIError):
    """The plan does not allow this."""


class NotFound(APIError):
    """Not found in this account."""


class Conflict(APIError):
    """The request conflicts with an earlier one."""


class RateLimited(APIError):
    """Too many requests; retry after `retry_after` seconds."""


class ServerError(APIError):
    """The server could not answer the request."""


class OrderFailed(EaselError):
    """The order failed; its credits were refunded."""

    def __init__(self, order: OrderStatus) -> None:
        error = order.error
        self.order = order
        self.code = error.code if error else None
        detail = (error.message if error else None) or order.status
        super().__init__(f"order {order.order_id} {order.status}: {detail}")


class OrderCanceled(OrderFailed):
    """The order was canceled; its credits were refunded."""


class WaitTimeout(EaselError, TimeoutError):
    """The order did not end within the wait; it goes on."""


BY_CODE: dict[str, type[APIError]] = {
    "invalid_request": InvalidRequest,
    "payload_too_large": InvalidRequest,
    "unauthorized": AuthenticationError,
    "quota_exceeded": QuotaExceeded,
    "forbidden": PlanForbidden,
    "not_found": NotFound,
    "conflict": Conflict,
    "rate_limited": RateLimited,
    "busy": ServerError,
    "model_unavailable": ServerError,
    "internal_error": ServerError,
}
BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    402: QuotaExceeded,
    403: PlanForbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
}


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`Retry-After` in seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from datetime import UTC, datetime

    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_from_response(status_code: int, content: bytes, headers: Mapping[str, str]) -> APIError:
    """The exception for an error answer: by the API's error code, else by the HTTP status. The
    native shape is `{"ok": false, "error": {"code", "message", "param"}}`; a proxy's HTML page
    becomes the message as it is."""
    body: Any = None
    code = message = param = None
    try:
        body = json.loads(content)
    except ValueError:
        message = content.decode("utf-8", "replace").strip()[:500] or None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            code, message, param = error.get("code"), error.get("message"), error.get("param")
        elif isinstance(error, str):
            message = error
        elif isinstance(body.get("detail"), str):
            message = body["detail"]
    cls = BY_CODE.get(str(code)) or BY_STATUS.get(status_code)
    if cls is None:
        cls = ServerError if status_code >= 500 else APIError
    return cls(
        str(message) if message else f"HTTP {status_code}",
        status_code=status_code,
        code=str(code) if code else None,
        param=str(param) if param else None,
        body=body,
        retry_after=retry_after_seconds(headers),
    )
