"""The relational schema. Migrations in `migrations/versions` must produce exactly this."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both SQLite and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    plan: Mapped[str] = mapped_column(String(64))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # Denormalised so the claim statement can keep the running cap under concurrency.
    running_count: Mapped[int] = mapped_column(Integer, default=0)
    max_running: Mapped[int] = mapped_column(Integer)
    # The fair_seq of the account's newest order (orders/queue.py: fair order within a priority).
    queue_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    webhook_secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set by an admin: its keys and console sessions stop working at once.
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ConsoleUser(Base):
    """A person who signs in to the web console; belongs to one account."""

    __tablename__ = "console_users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConsoleSession(Base):
    """A signed-in browser: the cookie carries the token, the row only its SHA-256."""

    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("console_users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    user_agent: Mapped[str] = mapped_column(String(256), default="")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LedgerEntry(Base):
    """Append-only. Balance = sum(amount); plan credits count only in their own period."""

    __tablename__ = "ledger"
    __table_args__ = (
        # At most one debit and one refund per order and bucket; one grant per account and month.
        UniqueConstraint("order_id", "kind", "bucket", name="uq_ledger_order_kind_bucket"),
        Index(
            "uq_ledger_grant_period",
            "account_id",
            "period",
            unique=True,
            sqlite_where=text("kind = 'grant'"),
            postgresql_where=text("kind = 'grant'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # grant | topup | debit | refund
    bucket: Mapped[str] = mapped_column(String(8))  # plan | topup
    amount: Mapped[int] = mapped_column(Integer)
    period: Mapped[str] = mapped_column(String(7))  # YYYY-MM (UTC) when written
    order_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    note: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("account_id", "idempotency_key", name="uq_orders_account_idempotency"),
        UniqueConstraint("account_id", "external_task_id", name="uq_orders_account_external"),
        Index("ix_orders_account_created", "account_id", "created_at"),
        Index("ix_orders_sweep", "outputs_swept", "outputs_expire_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    dialect: Mapped[str] = mapped_column(String(16))
    external_task_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str] = mapped_column(String(64))
    model_alias: Mapped[str] = mapped_column(String(64))
    product_type: Mapped[str] = mapped_column(String(32))
    task_type: Mapped[str] = mapped_column(String(16))  # image | animation
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    enhanced_prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Prompt enhancement (migration 0012): done | skipped (enhance_note says why) | null.
    enhance_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    enhance_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    enhanced_negative_prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer)
    frames: Mapped[int] = mapped_column(Integer, default=0)
    steps: Mapped[int] = mapped_column(Integer)
    guidance: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(BigInteger)
    acceleration: Mapped[str] = mapped_column(String(16), default="none")
    output_format: Mapped[str] = mapped_column(String(8), default="png")
    reference_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    strength: Mapped[float | None] = mapped_column(Float, nullable=True)
    # An edit's further images and an inpainting's mask (migration 0013, orders/inputs.py):
    # JSON text of their storage keys, '' when none; only orders without them batch together.
    inputs: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The LoRAs it runs with, as canonical JSON text (orders/loras.py): the follower claim
    # batches only orders whose text is equal.
    loras: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    llm_enhance: Mapped[bool] = mapped_column(Boolean, default=False)
    # What it paid for llm_enhance (migration 0014), refunded when nothing was enhanced.
    enhance_credits: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    safety_check: Mapped[bool] = mapped_column(Boolean, default=False)
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    # The dialect's own fields (dialects/*: a DialectData subclass as JSON).
    dialect_data: Mapped[dict[str, Any]] = mapped_column("extra", JSON, default=dict)
    webhook_on_start: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    status: Mapped[str] = mapped_column(
        String(16)
    )  # pending | running | completed | failed | canceled
    progress: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(Integer)
    # Place in the fair order among accounts of one priority (orders/queue.py `fair_seq`).
    fair_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    cost_credits: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    outputs_expire_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    outputs_swept: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # What the order is doing beyond its status (migration 0008): waiting_for_worker,
    # loading_model (bytes done of total while its weights download), generating.
    stage: Mapped[str | None] = mapped_column(String(32), nullable=True)
    load_bytes_done: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    load_bytes_total: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # SQLite: stamped by triggers on every insert and update with a counter that grows in commit
    # order, which the embedded change feed polls (orders/changes.py); PostgreSQL leaves it NULL
    # and NOTIFYs instead (migration 0007).
    change_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


Index("ix_orders_change_seq", Order.change_seq)

# The claim walks these in order (orders/queue.py): highest priority, then fair_seq, then oldest;
# the second once per model a worker serves or holds loaded.
Index("ix_orders_fair", Order.status, Order.priority.desc(), Order.fair_seq, Order.created_at)
Index(
    "ix_orders_model_fair",
    Order.status,
    Order.model,
    Order.priority.desc(),
    Order.fair_seq,
    Order.created_at,
)


class Output(Base):
    __tablename__ = "outputs"
    __table_args__ = (UniqueConstraint("order_id", "index", name="uq_outputs_order_index"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(256))
    content_type: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Safety check (migration 0012): NSFW score 0..1 (null: not checked) and what was done:
    # null (passed), flagged, blurred, blocked (held, not shown), released, confirmed.
    nsfw_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    safety: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    # A blurred output's unblurred original, held privately for review (migration 0015).
    original_key: Mapped[str | None] = mapped_column(String(256), nullable=True)


class WebhookDelivery(Base):
    """Outbox: written in the same transaction as the status change it reports."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        # The sender's claim walks each endpoint's due deliveries in due order
        # (webhooks/claim.py CLAIM_DUE_*); expired leases are found by the second.
        Index(
            "ix_webhook_deliveries_endpoint_due",
            "endpoint_id",
            "state",
            "next_attempt_at",
            "created_at",
        ),
        Index("ix_webhook_deliveries_lease", "lease_until"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    # The account's endpoint (scheme + host + port of `url`), set when the row is flushed.
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    order_id: Mapped[str] = mapped_column(String(32), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    event: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set while a sender holds the delivery in flight; a lease that ran out (the sender died)
    # is released and the delivery is due again.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # While leased: taken ahead of a free endpoint slot (not counted in the endpoint's
    # in_flight) until its sender hands it a finished delivery's slot (migration 0016).
    reserved: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    last_duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Worker(Base):
    """A worker process as it last reported itself (on start, heartbeat, model load and unload)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    device: Mapped[str] = mapped_column(String(255))
    loaded_models: Mapped[list[str]] = mapped_column(JSON, default=list)  # least recent first
    loaded_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    served_models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # None: all
    # What it can run (family installed, weights present or downloadable); None: not reported.
    servable_models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookEndpoint(Base):
    """Where one account's webhooks go: the scheme, host and port of their URLs. Concurrency,
    backoff and disabling are per endpoint, so one endpoint's trouble stays its own."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (UniqueConstraint("account_id", "origin", name="uq_webhook_endpoints_origin"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    origin: Mapped[str] = mapped_column(String(2048))  # scheme://host:port
    # Deliveries senders hold in flight now (each with a lease on its row).
    in_flight: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Backing off as a whole: nothing is sent before this, then one probe at a time.
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OrderAttempt(Base):
    """One try of an order on one of its model's channels (backends/upstream/backend.py),
    written before the provider is called; the provider's id, URLs and cost are the operator's,
    never shown to the client."""

    __tablename__ = "order_attempts"
    __table_args__ = (
        UniqueConstraint("order_id", "number", name="uq_order_attempts_order_number"),
        Index("ix_order_attempts_channel_created", "model", "channel", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, … within the order
    model: Mapped[str] = mapped_column(String(64))  # the upstream catalog model
    channel: Mapped[str] = mapped_column(String(128))  # the channel's name within the model
    provider: Mapped[str] = mapped_column(String(32))
    # submitting | accepted | succeeded | refused | unbilled | failed | canceled | lost | handed_off
    state: Mapped[str] = mapped_column(String(16))
    remote_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    handle: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # what polling needs
    remote_status: Mapped[str] = mapped_column(String(64), default="")
    queue_position: Mapped[int | None] = mapped_column(Integer, nullable=True)
    images: Mapped[int] = mapped_column(Integer)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    retry_after: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    outputs: Mapped[list[str]] = mapped_column(JSON, default=list)  # the provider's output URLs
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)


# The tables as Core sees them, for statements that need no ORM objects (no session bookkeeping).
ACCOUNTS = cast(Table, Account.__table__)
ORDERS = cast(Table, Order.__table__)
OUTPUTS = cast(Table, Output.__table__)
ATTEMPTS = cast(Table, OrderAttempt.__table__)
DELIVERIES = cast(Table, WebhookDelivery.__table__)
ENDPOINTS = cast(Table, WebhookEndpoint.__table__)
