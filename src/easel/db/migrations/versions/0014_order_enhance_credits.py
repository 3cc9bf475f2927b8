"""order enhance credits: what an llm_enhance order paid for its enhancement

`orders.enhance_credits`: the plan's `enhance_credits` charged with the order (0 without
llm_enhance), given back (ledger kind `refund_enhance`) when nothing was enhanced; an output's
share of the price is taken from the rest. Plain ADD COLUMN: SQLite keeps the `orders` triggers
of 0007.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-14 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "orders", sa.Column("enhance_credits", sa.Integer(), server_default="0", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("orders", "enhance_credits")
