"""order changes: every change of an order is announced (orders/changes.py)

PostgreSQL: a row trigger NOTIFYs the order's id on `easel_order_changes` (db/engine.py
ORDER_CHANGES_CHANNEL) in the changing transaction, with " q" appended when the change moves the
queue (a new order, or a change of status). SQLite: triggers stamp the row with the next
`change_seq` (one writer at a time, so the counter grows in commit order), which the embedded
change feed polls through `ix_orders_change_seq`.

Triggers catch every statement that writes `orders` (claim, progress, finish, cancel, requeue,
sweep, and any added later). A SQLite migration that rebuilds `orders` with batch_alter_table
drops them: recreate them after it (`create_sqlite_triggers`); the change feed refuses to start
without them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

CHANNEL = "easel_order_changes"
SQLITE_TRIGGERS = ("orders_changed_insert", "orders_changed_update")
_NEXT = "(SELECT COALESCE(MAX(change_seq), 0) + 1 FROM orders)"


def create_sqlite_triggers() -> None:
    op.execute(
        f"""
        CREATE TRIGGER orders_changed_insert AFTER INSERT ON orders
        BEGIN
            UPDATE orders SET change_seq = {_NEXT} WHERE id = NEW.id;
        END
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER orders_changed_update AFTER UPDATE ON orders
        WHEN NEW.change_seq IS OLD.change_seq
        BEGIN
            UPDATE orders SET change_seq = {_NEXT} WHERE id = NEW.id;
        END
        """
    )


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("change_seq", sa.BigInteger(), nullable=True))
    op.create_index("ix_orders_change_seq", "orders", ["change_seq"])
    if op.get_bind().dialect.name == "sqlite":
        create_sqlite_triggers()
        return
    op.execute(
        f"""
        CREATE FUNCTION easel_order_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
                PERFORM pg_notify('{CHANNEL}', NEW.id || ' q');
            ELSE
                PERFORM pg_notify('{CHANNEL}', NEW.id);
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER orders_changed AFTER INSERT OR UPDATE ON orders "
        "FOR EACH ROW EXECUTE FUNCTION easel_order_changed()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        op.execute("DROP TRIGGER IF EXISTS orders_changed ON orders")
        op.execute("DROP FUNCTION IF EXISTS easel_order_changed()")
    op.drop_index("ix_orders_change_seq", "orders")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("change_seq")
