"""notifications: outbox, audit cursor, reminder state, SLA breaches, settings cache

Revision ID: 0003
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None

_str = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "outboxmessage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", _str(length=300), nullable=False),
        sa.Column("campaign_id", _str(), nullable=False),
        sa.Column("kind", _str(), nullable=False),
        sa.Column("recipient", _str(), nullable=False),
        sa.Column("channel", _str(), nullable=False),
        sa.Column("target", sa.Integer(), nullable=False),
        sa.Column("title", _str(), nullable=False),
        sa.Column("body", _str(), nullable=False),
        sa.Column("status", _str(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim", _str(length=40), nullable=True),
        sa.Column("last_error", _str(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    op.create_index("ix_outboxmessage_campaign_id", "outboxmessage", ["campaign_id"])
    op.create_index("ix_outbox_status_next", "outboxmessage", ["status", "next_attempt_at"])

    op.create_table(
        "notifycursor",
        sa.Column("name", _str(length=40), nullable=False),
        sa.Column("last_event_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )

    op.create_table(
        "reminderstate",
        sa.Column("item_kind", _str(length=12), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", _str(), nullable=False),
        sa.Column("reminders", sa.Integer(), nullable=False),
        sa.Column("last_reminded_on", sa.Date(), nullable=True),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("item_kind", "item_id"),
        sqlite_with_rowid=False,  # the key is the row: one B-tree to write per reminder, not two
    )

    op.create_table(
        "slabreach",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", _str(), nullable=False),
        sa.Column("rule", _str(), nullable=False),
        sa.Column("subject", _str(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_slabreach_campaign_id", "slabreach", ["campaign_id"])
    op.create_index("uq_sla_breach", "slabreach", ["campaign_id", "rule", "subject"], unique=True)

    op.create_table(
        "notifysettings",
        sa.Column("campaign_id", _str(length=80), nullable=False),
        sa.Column("spec_hash", _str(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("lead_days", sa.Integer(), nullable=False),
        sa.Column("turnaround_days", sa.Integer(), nullable=False),
        sa.Column("sla_review_days", sa.Integer(), nullable=True),
        sa.Column("sla_publish_days", sa.Integer(), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id"),
    )


def downgrade() -> None:
    op.drop_table("notifysettings")
    op.drop_index("uq_sla_breach", table_name="slabreach")
    op.drop_index("ix_slabreach_campaign_id", table_name="slabreach")
    op.drop_table("slabreach")
    op.drop_table("reminderstate")
    op.drop_table("notifycursor")
    op.drop_index("ix_outbox_status_next", table_name="outboxmessage")
    op.drop_index("ix_outboxmessage_campaign_id", table_name="outboxmessage")
    op.drop_table("outboxmessage")
