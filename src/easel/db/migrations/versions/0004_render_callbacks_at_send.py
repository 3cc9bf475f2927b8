"""callbacks rendered when sent: the outbox keeps the event, not the body

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(
            sa.Column("webhook_on_start", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.execute("UPDATE orders SET webhook_on_start = true WHERE dialect = 'kirin'")
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_column("payload")


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.add_column(sa.Column("payload", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("webhook_on_start")
