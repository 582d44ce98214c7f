"""approval policies: stages, quorum, primary, timeouts, escalation; delegation; one-click links; append-only audit

Revision ID: 0004
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table("approvalgate") as b:
        b.add_column(sa.Column("stage", S(), nullable=False, server_default=""))
        b.add_column(sa.Column("stage_index", sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("stages_total", sa.Integer(), nullable=False, server_default="1"))
        b.add_column(sa.Column("quorum", sa.Integer(), nullable=True))
        b.add_column(sa.Column("primary_approver", S(), nullable=True))
        b.add_column(sa.Column("on_timeout", S(), nullable=False, server_default="wait"))
        b.add_column(sa.Column("escalate_to", sa.JSON(), nullable=False, server_default="[]"))
        b.add_column(sa.Column("escalation_level", sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("on_reject", S(), nullable=False, server_default="stop"))
    with op.batch_alter_table("decision") as b:
        b.add_column(sa.Column("decided_by", S(), nullable=False, server_default=""))
    op.create_table(
        "delegation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("person", S(), nullable=False),
        sa.Column("delegate", S(), nullable=False),
        sa.Column("starts", sa.Date(), nullable=False),
        sa.Column("ends", sa.Date(), nullable=False),
        sa.Column("reason", S(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_delegation_person", "delegation", ["person"])
    op.create_table(
        "usedlink",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("gate_id", sa.Integer(), nullable=False),
        sa.Column("person", S(), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("nonce"),
    )
    # The audit log is append-only: the database itself refuses edits and deletions.
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER auditevent_no_{verb.lower()} BEFORE {verb} ON auditevent "
                       "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END")
    else:
        op.execute("CREATE OR REPLACE FUNCTION auditevent_append_only() RETURNS trigger AS $$ "
                   "BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$ LANGUAGE plpgsql")
        op.execute("CREATE TRIGGER auditevent_append_only BEFORE UPDATE OR DELETE ON auditevent "
                   "FOR EACH ROW EXECUTE FUNCTION auditevent_append_only()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS auditevent_no_update")
        op.execute("DROP TRIGGER IF EXISTS auditevent_no_delete")
    else:
        op.execute("DROP TRIGGER IF EXISTS auditevent_append_only ON auditevent")
        op.execute("DROP FUNCTION IF EXISTS auditevent_append_only()")
    op.drop_table("usedlink")
    op.drop_index("ix_delegation_person", table_name="delegation")
    op.drop_table("delegation")
    with op.batch_alter_table("decision") as b:
        b.drop_column("decided_by")
    with op.batch_alter_table("approvalgate") as b:
        for col in ("on_reject", "escalation_level", "escalate_to", "on_timeout", "primary_approver", "quorum",
                    "stages_total", "stage_index", "stage"):
            b.drop_column(col)
