"""fair queue: orders.fair_seq, accounts.queue_seq, the claim indexes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(
            sa.Column("queue_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
    with op.batch_alter_table("orders") as batch:
        batch.add_column(
            sa.Column("fair_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
        batch.drop_index("ix_orders_queue")
    priority: sa.UnaryExpression[int] = sa.column("priority", sa.Integer()).desc()
    op.create_index("ix_orders_fair", "orders", ["status", priority, "fair_seq", "created_at"])
    op.create_index(
        "ix_orders_model_fair", "orders", ["status", "model", priority, "fair_seq", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_orders_model_fair", "orders")
    op.drop_index("ix_orders_fair", "orders")
    with op.batch_alter_table("orders") as batch:
        batch.create_index("ix_orders_queue", ["status", "priority", "created_at"])
        batch.drop_column("fair_seq")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("queue_seq")
