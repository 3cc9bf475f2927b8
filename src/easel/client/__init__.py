"""The Python SDK of Easel's native API: `Easel` (sync) and `AsyncEasel`, on httpx.

    from easel.client import Easel

    client = Easel()  # EASEL_BASE_URL, EASEL_API_KEY
    order = client.generate(style="anime", prompt="a red fox", seed=7)
    for file in order.download("out/"):
        print(file.path, file.seed)

It imports nothing of the server (no SQLAlchemy, FastAPI or torch): `pip install easel` is
enough. docs/sdk.md has the whole tour; `easel.client.errors` draws the exception tree.
"""

from easel.client.async_client import AsyncEasel
from easel.client.async_order import AsyncOrder
from easel.client.client import Easel
from easel.client.downloads import DownloadedFile
from easel.client.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    Conflict,
    EaselError,
    InvalidRequest,
    NotFound,
    OrderCanceled,
    OrderFailed,
    PlanForbidden,
    QuotaExceeded,
    RateLimited,
    ServerError,
    WaitTimeout,
)
from easel.client.events import Event
from easel.client.models import (
    Account,
    Canceled,
    Created,
    OrderStatus,
    Output,
    Plan,
    WebhookDelivery,
)
from easel.client.order import Order
from easel.webhooks.signing import WebhookVerificationError, verify

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "Account",
    "AsyncEasel",
    "AsyncOrder",
    "AuthenticationError",
    "Canceled",
    "Conflict",
    "Created",
    "DownloadedFile",
    "Easel",
    "EaselError",
    "Event",
    "InvalidRequest",
    "NotFound",
    "Order",
    "OrderCanceled",
    "OrderFailed",
    "OrderStatus",
    "Output",
    "Plan",
    "PlanForbidden",
    "QuotaExceeded",
    "RateLimited",
    "ServerError",
    "WaitTimeout",
    "WebhookDelivery",
    "WebhookVerificationError",
    "verify",
]
