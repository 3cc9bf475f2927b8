"""webhook endpoints: per-endpoint concurrency, backoff and disabling; delivery leases

Every delivery gets its account's endpoint (scheme + host + port of its URL); endpoints of rows
already in the outbox are made here, with the same ids webhooks/endpoints.py gives.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 00:00:00.000000
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import op

import easel.db.tables

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> str:  # webhooks/endpoints.py origin_of, as of this revision
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def _endpoint_id(account_id: str, origin: str) -> str:  # webhooks/endpoints.py endpoint_id
    return "wep_" + hashlib.sha256(f"{account_id}\n{origin}".encode()).hexdigest()[:24]


def upgrade() -> None:
    when = easel.db.tables.UTCDateTime(timezone=True)
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("origin", sa.String(length=2048), nullable=False),
        sa.Column("in_flight", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "consecutive_failures", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("failing_since", when, nullable=True),
        sa.Column("retry_at", when, nullable=True),
        sa.Column("disabled_at", when, nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("last_success_at", when, nullable=True),
        sa.Column("last_failure_at", when, nullable=True),
        sa.Column("created_at", when, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_webhook_endpoints_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
        sa.UniqueConstraint("account_id", "origin", name="uq_webhook_endpoints_origin"),
    )
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.add_column(sa.Column("endpoint_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("lease_until", when, nullable=True))
        batch.add_column(sa.Column("last_duration_ms", sa.Integer(), nullable=True))

    bind = op.get_bind()
    deliveries = sa.table(
        "webhook_deliveries",
        sa.column("id", sa.String()),
        sa.column("account_id", sa.String()),
        sa.column("url", sa.String()),
        sa.column("created_at", when),
        sa.column("endpoint_id", sa.String()),
    )
    endpoints = sa.table(
        "webhook_endpoints",
        sa.column("id", sa.String()),
        sa.column("account_id", sa.String()),
        sa.column("origin", sa.String()),
        sa.column("created_at", when),
    )
    made: dict[str, dict[str, object]] = {}
    routes: list[dict[str, str]] = []
    rows = bind.execute(
        sa.select(
            deliveries.c.id, deliveries.c.account_id, deliveries.c.url, deliveries.c.created_at
        )
    )
    for delivery_id, account_id, url, created_at in rows:
        origin = _origin(url)
        endpoint = _endpoint_id(account_id, origin)
        made.setdefault(
            endpoint,
            {"id": endpoint, "account_id": account_id, "origin": origin, "created_at": created_at},
        )
        routes.append({"delivery": delivery_id, "endpoint": endpoint})
    if made:
        bind.execute(endpoints.insert(), list(made.values()))
        bind.execute(
            deliveries.update()
            .where(deliveries.c.id == sa.bindparam("delivery"))
            .values(endpoint_id=sa.bindparam("endpoint")),
            routes,
        )

    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.alter_column("endpoint_id", existing_type=sa.String(length=32), nullable=False)
        batch.create_foreign_key(
            op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
            "webhook_endpoints",
            ["endpoint_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_index(
            "ix_webhook_deliveries_endpoint_due",
            ["endpoint_id", "state", "next_attempt_at", "created_at"],
        )
        batch.create_index("ix_webhook_deliveries_lease", ["lease_until"])


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_index("ix_webhook_deliveries_lease")
        batch.drop_index("ix_webhook_deliveries_endpoint_due")
        batch.drop_constraint(
            op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"), type_="foreignkey"
        )
        batch.drop_column("last_duration_ms")
        batch.drop_column("lease_until")
        batch.drop_column("endpoint_id")
    op.drop_table("webhook_endpoints")
