"""order attempts: each try of an order on an upstream channel (backends/upstream/backend.py)

Written before the provider is called, so a worker that takes the order over after a crash polls
the job the provider accepted instead of submitting it again. The admin channel report reads
success rates, latencies and costs from it (`ix_order_attempts_channel_created`).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import easel.db.tables

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = easel.db.tables.UTCDateTime(timezone=True)
    op.create_table(
        "order_attempts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("order_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=128), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("remote_id", sa.String(length=256), nullable=True),
        sa.Column("handle", sa.JSON(), nullable=False),
        sa.Column("remote_status", sa.String(length=64), nullable=False),
        sa.Column("queue_position", sa.Integer(), nullable=True),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("retry_after", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("worker_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", when, nullable=False),
        sa.Column("accepted_at", when, nullable=True),
        sa.Column("finished_at", when, nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_order_attempts_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_attempts")),
        sa.UniqueConstraint("order_id", "number", name="uq_order_attempts_order_number"),
    )
    op.create_index(
        "ix_order_attempts_channel_created",
        "order_attempts",
        ["model", "channel", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_order_attempts_order_id"), "order_attempts", ["order_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_order_attempts_order_id"), table_name="order_attempts")
    op.drop_index("ix_order_attempts_channel_created", table_name="order_attempts")
    op.drop_table("order_attempts")
