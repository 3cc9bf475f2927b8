"""`AsyncEasel`: the asyncio client of the native API (httpx); `Easel`'s twin, method for
method."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self, TypeVar

import anyio
import httpx
from pydantic import BaseModel

from easel.client import retries
from easel.client.async_order import AsyncOrder
from easel.client.bodies import ImageInput, generate_body, new_idempotency_key
from easel.client.downloads import finish, part_path
from easel.client.errors import AuthenticationError, EaselError, error_from_response
from easel.client.models import (
    Account,
    Canceled,
    Created,
    DeliveryLog,
    OrderPage,
    OrderStatus,
    Plan,
    PlanList,
    Redelivered,
    WebhookDelivery,
    WebhookSecret,
)
from easel.client.options import resolve

M = TypeVar("M", bound=BaseModel)


class AsyncEasel:
    """The native API of an Easel server, for asyncio (see `Easel`).

    `base_url` and `api_key` default to EASEL_BASE_URL and EASEL_API_KEY. Every request has a
    `timeout` (seconds) and is retried `max_retries` times after a connection error, a 429 or a
    5xx; `wait_timeout` bounds `Order.wait()`, `events()` and `download()` unless they are given
    their own. `http_client`: an httpx.AsyncClient of your own (proxies, certificates).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 2,
        wait_timeout: float = 900.0,
        poll_interval: float = 1.0,
        stream_timeout: float = 60.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.options = resolve(
            base_url,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            wait_timeout=wait_timeout,
            poll_interval=poll_interval,
            stream_timeout=stream_timeout,
        )
        self._own_http = http_client is None
        self.http = http_client or httpx.AsyncClient(follow_redirects=True)
        self.orders = AsyncOrders(self)
        self.webhooks = AsyncWebhooks(self)

    @property
    def base_url(self) -> str:
        return self.options.base_url

    @property
    def api_key(self) -> str | None:
        return self.options.api_key

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_http:
            await self.http.aclose()

    # ---------------------------------------------------------------- the API

    async def generate(
        self,
        *,
        prompt: str,
        style: str,
        product_type: str = "static_image",
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        seed: int | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        output_format: str | None = None,
        llm_enhance: bool | None = None,
        webhook_url: str | None = None,
        image: ImageInput | None = None,
        strength: float | None = None,
        idempotency_key: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> AsyncOrder:
        """Submit an order (charged once, however often the request is retried) and return its
        handle. Arguments left None take the server's defaults; `image` is a reference image
        (URL, base64, a Path or bytes) for image-to-image."""
        body = generate_body(
            prompt=prompt,
            style=style,
            product_type=product_type,
            negative_prompt=negative_prompt,
            width=width,
            height=height,
            seed=seed,
            steps=steps,
            guidance_scale=guidance_scale,
            output_format=output_format,
            llm_enhance=llm_enhance,
            webhook_url=webhook_url,
            image=image,
            strength=strength,
            extra_body=extra_body,
        )
        key = idempotency_key or new_idempotency_key()
        response = await self.request(
            "POST", "/api/v1/generate", json=body, headers={"Idempotency-Key": key}
        )
        created = Created.model_validate(response.json())
        replayed = response.headers.get("idempotent-replayed") == "true"
        return AsyncOrder(self, created.order_id, created=created, key=key, replayed=replayed)

    def order(self, order_id: str) -> AsyncOrder:
        """A handle on an existing order (no request is sent)."""
        return AsyncOrder(self, order_id)

    async def account(self) -> Account:
        """Plan, priority, credits left, webhook signing secret."""
        return await self.get("/api/v1/account", Account)

    async def plans(self) -> list[Plan]:
        """The server's plans (no key needed)."""
        return (await self.get("/api/v1/plans", PlanList)).plans

    # ---------------------------------------------------------------- HTTP

    async def get(self, path: str, model: type[M], params: Mapping[str, Any] | None = None) -> M:
        return model.model_validate((await self.request("GET", path, params=params)).json())

    async def post(self, path: str, model: type[M]) -> M:
        return model.model_validate((await self.request("POST", path)).json())

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> httpx.Response:
        """One API call, retried; a refusal raises its APIError."""
        url = self.options.url(path)
        query = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            try:
                response = await self.http.request(
                    method,
                    url,
                    json=json,
                    params=query,
                    headers=self.options.headers() | dict(headers or {}),
                    timeout=self.options.http_timeout(read_timeout),
                )
            except httpx.TransportError as exc:
                error: EaselError = retries.connection_error(exc, method, url)
            else:
                if response.status_code < 400:
                    return response
                error = self._refusal(response)
            wait = retries.delay(error, attempt, self.options.max_retries)
            if wait is None:
                raise error
            await asyncio.sleep(wait)
            attempt += 1

    def _refusal(self, response: httpx.Response) -> EaselError:
        error = error_from_response(response.status_code, response.content, response.headers)
        if isinstance(error, AuthenticationError) and not self.options.api_key:
            error.message += " (no API key was given: pass api_key= or set EASEL_API_KEY)"
        return error

    @asynccontextmanager
    async def stream_events(
        self, order_id: str, read_timeout: float
    ) -> AsyncIterator[httpx.Response]:
        """The order's text/event-stream (not retried: the caller falls back to polling)."""
        url = self.options.url(f"/api/v1/orders/{order_id}/events")
        headers = self.options.headers() | {"Accept": "text/event-stream"}
        timeout = self.options.http_timeout(read_timeout)
        async with self.http.stream("GET", url, headers=headers, timeout=timeout) as response:
            if response.status_code >= 400:
                await response.aread()
                raise self._refusal(response)
            yield response

    async def fetch_to(self, url: str, path: Path) -> None:
        """Stream an output URL (signed: no key is sent with it) into `path`, retried."""
        part = part_path(path)
        attempt = 0
        while True:
            try:
                async with self.http.stream(
                    "GET",
                    url,
                    headers=self.options.headers(auth=False),
                    timeout=self.options.http_timeout(),
                ) as response:
                    if response.status_code < 400:
                        async with await anyio.open_file(part, "wb") as f:
                            async for chunk in response.aiter_bytes():
                                await f.write(chunk)
                        await asyncio.to_thread(finish, part, path)
                        return
                    await response.aread()
                    error: EaselError = self._refusal(response)
            except httpx.TransportError as exc:
                error = retries.connection_error(exc, "GET", url.split("?")[0])
            wait = retries.delay(error, attempt, self.options.max_retries)
            if wait is None:
                part.unlink(missing_ok=True)
                raise error
            await asyncio.sleep(wait)
            attempt += 1


class AsyncOrders:
    """`client.orders`: read, list and cancel this account's orders."""

    def __init__(self, client: AsyncEasel) -> None:
        self._client = client

    async def get(self, order_id: str) -> AsyncOrder:
        """The order's handle, read now."""
        order = AsyncOrder(self._client, order_id)
        await order.refresh()
        return order

    async def list(
        self, *, status: str | None = None, limit: int = 20, before: str | None = None
    ) -> AsyncIterator[OrderStatus]:
        """Every order of this account, newest first, `limit` per request, following the pages
        (`break` when you have enough)."""
        while True:
            params = {"limit": limit, "before": before, "status": status}
            page = await self._client.get("/api/v1/orders", OrderPage, params)
            for order in page.orders:
                yield order
            if not page.next_before:
                return
            before = page.next_before

    async def cancel(self, order_id: str) -> Canceled:
        """Pending: canceled and refunded at once; running: stopped at its next step."""
        return await self._client.post(f"/api/v1/orders/{order_id}/cancel", Canceled)


class AsyncWebhooks:
    """`client.webhooks`: the delivery log and its redelivery, the signing secret."""

    def __init__(self, client: AsyncEasel) -> None:
        self._client = client

    async def deliveries(
        self, *, order_id: str | None = None, state: str | None = None
    ) -> list[WebhookDelivery]:
        params = {"order_id": order_id, "state": state}
        log = await self._client.get("/api/v1/webhooks/deliveries", DeliveryLog, params)
        return log.deliveries

    async def redeliver(self, delivery_id: str) -> WebhookDelivery:
        """Send the delivery again now, with the same `webhook-id`."""
        path = f"/api/v1/webhooks/deliveries/{delivery_id}/redeliver"
        return (await self._client.post(path, Redelivered)).delivery

    async def rotate_secret(self) -> str:
        """A new signing secret (the old one stops at once)."""
        secret = await self._client.post("/api/v1/webhooks/secret/rotate", WebhookSecret)
        return secret.webhook_secret
