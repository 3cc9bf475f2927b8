"""model lifecycle: what each worker can serve, and what a pending or running order is doing

`workers.servable_models`: the catalog models the worker can run (family installed, weights on
disk or downloadable); NULL from a worker older than this. `orders.stage`: `waiting_for_worker`
(no live worker serves its model), `loading_model` (with `load_bytes_done` of `load_bytes_total`
while its weights download), `generating`; NULL before a worker says anything. Plain ADD COLUMN:
SQLite keeps the `orders` triggers of 0007.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workers", sa.Column("servable_models", sa.JSON(), nullable=True))
    op.add_column("orders", sa.Column("stage", sa.String(length=32), nullable=True))
    op.add_column("orders", sa.Column("load_bytes_done", sa.BigInteger(), nullable=True))
    op.add_column("orders", sa.Column("load_bytes_total", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("orders", "load_bytes_total")
    op.drop_column("orders", "load_bytes_done")
    op.drop_column("orders", "stage")
    op.drop_column("workers", "servable_models")
