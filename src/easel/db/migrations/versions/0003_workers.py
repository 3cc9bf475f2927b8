"""workers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import easel.db.tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("device", sa.String(length=255), nullable=False),
        sa.Column("loaded_models", sa.JSON(), nullable=False),
        sa.Column("loaded_bytes", sa.BigInteger(), nullable=False),
        sa.Column("served_models", sa.JSON(), nullable=True),
        sa.Column("started_at", easel.db.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen", easel.db.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", easel.db.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )


def downgrade() -> None:
    op.drop_table("workers")
