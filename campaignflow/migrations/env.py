"""Alembic environment: runs on the connection campaignflow.db hands it."""

from alembic import context
from sqlmodel import SQLModel

import campaignflow.models  # noqa: F401  (registers the tables)

target_metadata = SQLModel.metadata
connection = context.config.attributes.get("connection")
if connection is None:
    from campaignflow import settings
    from sqlmodel import create_engine

    connection = create_engine(settings.get().store_url()).connect()

context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
