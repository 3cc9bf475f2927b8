"""order inputs: an edit's further reference images and an inpainting's mask

`orders.inputs`: JSON text `{"images": [storage keys of the 2nd.. images], "mask": key}` (the
first image stays in `reference_key`); '' for an order with at most one image and no mask. The
follower claim batches only orders without such inputs. Plain ADD COLUMN: SQLite keeps the
`orders` triggers of 0007.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-13 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("inputs", sa.Text(), server_default="", nullable=False))


def downgrade() -> None:
    op.drop_column("orders", "inputs")
