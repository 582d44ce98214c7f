"""reminder state per kind of item, keyed by the item's integer id (the rowid on SQLite)

Revision ID: 0005
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = {"gate": ("gatereminder", "gate_id"), "deliverable": ("deliverablereminder", "deliverable_id")}


def upgrade() -> None:
    for kind, (table, key) in TABLES.items():
        op.create_table(
            table,
            sa.Column(key, sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("reminders", sa.Integer(), nullable=False),
            sa.Column("last_reminded_on", sa.Date(), nullable=True),
            sa.Column("level", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint(key),
        )
        # Reminders already counted keep counting: escalation goes on where it was.
        op.execute(f"INSERT INTO {table} ({key}, reminders, last_reminded_on, level) "
                   f"SELECT item_id, reminders, last_reminded_on, level FROM reminderstate WHERE item_kind = '{kind}'")
    op.drop_table("reminderstate")


def downgrade() -> None:
    op.create_table(
        "reminderstate",
        sa.Column("item_kind", sa.String(length=12), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.String(), nullable=False, server_default=""),
        sa.Column("reminders", sa.Integer(), nullable=False),
        sa.Column("last_reminded_on", sa.Date(), nullable=True),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("item_kind", "item_id"),
        sqlite_with_rowid=False,
    )
    for kind, (table, key) in TABLES.items():
        op.execute(f"INSERT INTO reminderstate (item_kind, item_id, reminders, last_reminded_on, level) "
                   f"SELECT '{kind}', {key}, reminders, last_reminded_on, level FROM {table}")
        op.drop_table(table)
