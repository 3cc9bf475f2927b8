"""output original key: a blurred output's original, held for the operator's review

`outputs.original_key`: where the safety check keeps the unblurred original of a blurred output
(a private, random key: storage.private_key), so a false positive can be released; null for any
other output and once it is reviewed.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-15 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outputs", sa.Column("original_key", sa.String(256), nullable=True))


def downgrade() -> None:
    op.drop_column("outputs", "original_key")
