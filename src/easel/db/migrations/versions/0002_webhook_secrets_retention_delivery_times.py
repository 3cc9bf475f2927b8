"""webhook secrets, retention, delivery times

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 00:57:14.399965
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import easel.db.tables
from easel.webhooks.signing import new_secret

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("webhook_secret", sa.String(length=64), nullable=True))
    accounts = sa.table(
        "accounts", sa.column("id", sa.String), sa.column("webhook_secret", sa.String)
    )
    conn = op.get_bind()
    for (account_id,) in conn.execute(sa.select(accounts.c.id)).all():
        conn.execute(
            accounts.update().where(accounts.c.id == account_id).values(webhook_secret=new_secret())
        )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.alter_column("webhook_secret", existing_type=sa.String(length=64), nullable=False)

    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("outputs_swept", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index(
            "ix_orders_sweep", ["outputs_swept", "outputs_expire_at"], unique=False
        )

    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_attempt_at", easel.db.tables.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_column("last_attempt_at")

    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_sweep")
        batch_op.drop_column("outputs_swept")

    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("webhook_secret")
