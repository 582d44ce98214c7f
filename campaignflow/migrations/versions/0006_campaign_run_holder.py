"""the lifecycle run that holds a campaign: flow run id, process and lease (one run per campaign)

Revision ID: 0006
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel

revision = "0006"
down_revision = "0001"
branch_labels = None
depends_on = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table("campaign") as b:
        b.add_column(sa.Column("run_holder", S(), nullable=True))
        b.add_column(sa.Column("run_host", S(), nullable=False, server_default=""))
        b.add_column(sa.Column("run_pid", sa.Integer(), nullable=True))
        b.add_column(sa.Column("run_lease_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaign") as b:
        for column in ("run_lease_until", "run_pid", "run_host", "run_holder"):
            b.drop_column(column)
