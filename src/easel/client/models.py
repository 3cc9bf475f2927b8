"""The native API's responses as pydantic models, field for field as /openapi.json describes them
(tests/e2e/test_sdk.py checks that they cover it). Unknown fields are kept, so a newer server's
additions reach the caller (`model.model_extra`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

PENDING, RUNNING, COMPLETED, FAILED, CANCELED = (
    "pending",
    "running",
    "completed",
    "failed",
    "canceled",
)
FINAL = frozenset({COMPLETED, FAILED, CANCELED})


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Created(Model):
    """`POST /api/v1/generate`."""

    ok: bool = True
    order_id: str
    status: str
    product_type: str
    style: str
    priority: int
    cost: int


class Output(Model):
    """One stored image or clip of a completed order."""

    url: str
    seed: int
    width: int
    height: int
    content_type: str
    nsfw_detected: bool | None = None  # only when the safety check ran
    nsfw_score: float | None = None
    safety: str | None = None  # flagged, blurred or released, when the check acted on it


class Enhance(Model):
    """What the prompt enhancer did for an `llm_enhance` order."""

    status: str  # done | skipped
    reason: str | None = None  # why it was skipped
    negative_prompt: str | None = None  # the enhancer's suggestion


class OrderError(Model):
    code: str | None = None
    message: str | None = None


class Lora(Model):
    """A LoRA the order runs with: an installed one by name, or one by URL and hash."""

    name: str | None = None
    url: str | None = None
    sha256: str | None = None
    scale: float


class RouteAttempt(Model):
    """One try of an upstream order (the operator's view adds cost, latency, remote ids)."""

    number: int
    channel: str
    provider: str
    state: str


class Route(Model):
    """The route an upstream order took: shown to admin keys, and to every client when the
    server sets EASEL_EXPOSE_ROUTE."""

    channel: str
    provider: str
    attempts: list[RouteAttempt]
    cost: float | None = None


class LoadingModel(Model):
    """A worker is loading (or downloading) the order's model."""

    model: str
    bytes_done: int | None = None
    bytes_total: int | None = None


class OrderStatus(Model):
    """`GET /api/v1/status/{order_id}`: the order now. `queue_position` (and `waiting_for`, when
    no live worker serves its model) only while pending, `loading_model` while a worker loads
    the model, `outputs` / `output_urls` only when completed, `error` only when failed or
    canceled."""

    ok: bool = True
    order_id: str
    status: str
    product_type: str = ""
    style: str = ""
    model: str = ""
    priority: int = 0
    progress: int = 0
    step: int = 0
    total_steps: int = 0
    prompt: str = ""
    negative_prompt: str = ""
    width: int = 0
    height: int = 0
    n: int = 0
    seed: int = 0
    steps: int = 0
    guidance: float = 0.0
    llm_enhance: bool = False
    enhanced_prompt: str | None = None
    enhance: Enhance | None = None
    cost: int = 0
    attempts: int = 0
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    outputs_expire_at: str | None = None
    queue_position: int | None = None
    cancel_requested: bool | None = None
    waiting_for: str | None = None
    loading_model: LoadingModel | None = None
    loras: list[Lora] | None = None
    output_urls: list[str] | None = None
    outputs_expired: bool | None = None
    message: str | None = None
    outputs: list[Output] | None = None
    error: OrderError | None = None
    route: Route | None = None

    @property
    def final(self) -> bool:
        """Completed, failed or canceled: it will not change again."""
        return self.status in FINAL


class OrderPage(Model):
    """`GET /api/v1/orders`: one page, newest first."""

    ok: bool = True
    orders: list[OrderStatus]
    next_before: str | None = None


class Canceled(Model):
    """`POST /api/v1/orders/{order_id}/cancel`."""

    ok: bool = True
    order_id: str
    status: str
    cancel_requested: bool = Field(description="true: running, it stops at its next step")
    refunded: int


class Credits(Model):
    total: int
    plan: int
    topup: int


class DisabledEndpoint(Model):
    id: str
    url: str
    disabled_at: str
    reason: str


class Account(Model):
    """`GET /api/v1/account`."""

    ok: bool = True
    account_id: str
    email: str
    plan: str
    priority: int
    monthly_quota: int
    credits: Credits
    resets_at: str
    max_images_per_order: int
    animation: bool
    max_running: int
    webhook_secret: str
    webhook_endpoints_disabled: list[DisabledEndpoint] = []


class Plan(Model):
    id: str
    monthly_quota: int
    priority: int
    max_images_per_order: int
    animation: bool
    api_access: bool
    styles: list[str]
    max_running: int
    max_loras: int = 0
    allow_lora_urls: bool = False


class PlanList(Model):
    """`GET /api/v1/plans`."""

    ok: bool = True
    plans: list[Plan]


class WebhookDelivery(Model):
    """One webhook delivery: `id` is the `webhook-id` header of each of its attempts."""

    id: str
    order_id: str
    url: str
    event: str
    state: str
    attempts: int
    last_status: int | None = None
    last_error: str | None = None
    last_attempt_at: str | None = None
    next_attempt_at: str | None = None
    created_at: str | None = None
    delivered_at: str | None = None
    endpoint_id: str | None = None
    endpoint_state: str | None = None
    last_duration_ms: int | None = None
    latency_ms: int | None = None


class DeliveryLog(Model):
    """`GET /api/v1/webhooks/deliveries`."""

    ok: bool = True
    deliveries: list[WebhookDelivery]


class Redelivered(Model):
    """`POST /api/v1/webhooks/deliveries/{id}/redeliver`."""

    ok: bool = True
    delivery: WebhookDelivery


class WebhookSecret(Model):
    """`POST /api/v1/webhooks/secret/rotate`."""

    ok: bool = True
    webhook_secret: str
