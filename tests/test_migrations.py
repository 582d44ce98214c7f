"""The store's migrations: one alembic head, and stores left at any of the old branch heads upgrade to it."""

from __future__ import annotations

import os

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel

from campaignflow import db


def test_the_migrations_have_one_head_and_the_store_code_names_it():
    assert ScriptDirectory.from_config(db.alembic_config()).get_heads() == [db.SCHEMA_HEAD]


# Version rows that releases before the single head left behind (each upgraded to "heads" of its day).
OLD_STORES = {
    "ingestion and notifications": ("0002", "0003"),
    "approval policies": ("0002", "0004", "0005"),
    "the last release": ("0004", "0005", "0006", "0006_ingest"),
}


@pytest.mark.parametrize("old", list(OLD_STORES))
def test_a_store_at_the_old_heads_upgrades_to_the_one_head(store_url, old):
    os.makedirs(os.environ["CAMPAIGNFLOW_HOME"], exist_ok=True)
    eng = create_engine(store_url)
    cfg = db.alembic_config()
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        for revision in OLD_STORES[old]:
            command.upgrade(cfg, revision)
        assert {r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))} == set(OLD_STORES[old])
    db.migrate(eng)
    with eng.connect() as conn:
        assert [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))] == [db.SCHEMA_HEAD]
        schema = inspect(conn)
        assert set(schema.get_table_names()) - {"alembic_version"} == set(SQLModel.metadata.tables)
        for name, table in SQLModel.metadata.tables.items():
            assert {c["name"] for c in schema.get_columns(name)} == set(table.columns.keys()), name
    db.migrate(eng)  # at the head: nothing to do
    eng.dispose()
