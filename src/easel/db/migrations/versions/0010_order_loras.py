"""order LoRAs: the LoRA set an order runs with

`orders.loras`: canonical JSON text of the order's LoRAs (orders/loras.py; `[]` for none), which
the follower claim compares as text so that only orders with the same set batch together. Plain
ADD COLUMN: SQLite keeps the `orders` triggers of 0007.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-11 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("loras", sa.Text(), server_default="[]", nullable=False))


def downgrade() -> None:
    op.drop_column("orders", "loras")
