"""prompt enhancement and safety check: what the enhancer did, and each output's NSFW score

`orders.enhance_status` (done | skipped | null: not asked) with `enhance_note` (why it was
skipped; the enhanced prompt is `orders.enhanced_prompt`, there since 0001) and
`orders.enhanced_negative_prompt` (the enhancer's suggestion, used when the order gave none);
`outputs.nsfw_score` (0..1, null: not checked) and `outputs.safety` (null: passed or not checked;
flagged | blurred | blocked | released | confirmed). Plain ADD COLUMN: SQLite keeps the `orders`
triggers of 0007.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-12 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("enhance_status", sa.String(16), nullable=True))
    op.add_column("orders", sa.Column("enhance_note", sa.Text(), nullable=True))
    op.add_column("orders", sa.Column("enhanced_negative_prompt", sa.Text(), nullable=True))
    op.add_column("outputs", sa.Column("nsfw_score", sa.Float(), nullable=True))
    op.add_column("outputs", sa.Column("safety", sa.String(16), nullable=True))
    op.create_index("ix_outputs_safety", "outputs", ["safety"])


def downgrade() -> None:
    op.drop_index("ix_outputs_safety", "outputs")
    op.drop_column("outputs", "safety")
    op.drop_column("outputs", "nsfw_score")
    op.drop_column("orders", "enhanced_negative_prompt")
    op.drop_column("orders", "enhance_note")
    op.drop_column("orders", "enhance_status")
