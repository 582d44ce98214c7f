"""one head: joins the branches that feature areas grew from 0001, so every later revision has one parent

Revision ID: 0007
Revises: 0004, 0005, 0006, 0006_ingest
"""

revision = "0007"
down_revision = ("0004", "0005", "0006", "0006_ingest")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
