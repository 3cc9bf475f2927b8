"""webhook reserved: deliveries a sender leased ahead, without an endpoint slot

`webhook_deliveries.reserved`: set on a leased delivery that its sender took ahead of a free slot
(EASEL_WEBHOOK_CLAIM_AHEAD) and does not count in its endpoint's `in_flight`; a delivery whose
sender hands it a finished delivery's slot is recorded with reserved false. Meaningful only while
`lease_until` is set: a lease that runs out gives back a slot only for an unreserved delivery.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-16 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "webhook_deliveries",
        sa.Column("reserved", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("webhook_deliveries", "reserved")
