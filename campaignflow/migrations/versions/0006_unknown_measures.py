"""metric measures may be unknown (NULL: the source does not report them); ingestion runs keep their warnings

Revision ID: 0006_ingest
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = "0006_ingest"
down_revision = "0002"
branch_labels = None
depends_on = None

MEASURES = {"impressions": sa.Integer(), "clicks": sa.Integer(), "spend": sa.Float(), "conversions": sa.Float(),
            "conversion_value": sa.Float()}


def upgrade() -> None:
    with op.batch_alter_table("metricdaily") as batch_op:
        for name, type_ in MEASURES.items():
            batch_op.alter_column(name, existing_type=type_, nullable=True)
    with op.batch_alter_table("ingestionrun") as batch_op:
        batch_op.add_column(sa.Column("warnings", sa.String(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("ingestionrun") as batch_op:
        batch_op.drop_column("warnings")
    for name in MEASURES:
        op.execute(f"UPDATE metricdaily SET {name} = 0 WHERE {name} IS NULL")
    with op.batch_alter_table("metricdaily") as batch_op:
        for name, type_ in MEASURES.items():
            batch_op.alter_column(name, existing_type=type_, nullable=False)
