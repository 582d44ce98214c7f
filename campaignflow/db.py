"""Engine, sessions and migrations for the campaign store.

SQLite by default (WAL, so the CLI can read while a flow writes); any
SQLAlchemy URL through `CAMPAIGNFLOW_DATABASE_URL`, PostgreSQL included.
The schema is created and upgraded only by the migrations in migrations/.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import orjson
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from campaignflow import settings
from campaignflow.errors import UserError

if TYPE_CHECKING:
    from alembic.config import Config

_engines: dict[str, Engine] = {}
_migrated: set[str] = set()
_lock = threading.Lock()
MIGRATIONS = Path(__file__).parent / "migrations"


def _json_loads(text: str | bytes) -> Any:
    """JSON columns are read with orjson (a sweep reads the settings of every campaign); Python's json reads
    what only it writes (NaN, Infinity)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               json_deserializer=_json_loads)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            # Let SQLAlchemy, not the driver, issue BEGIN, so writes can ask for BEGIN IMMEDIATE.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # noqa: ANN001
            # A write transaction takes the write lock up front, so two deciders serialise
            # instead of both reading "open" and failing on upgrade.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

        return engine
    try:
        return create_engine(url, pool_pre_ping=True, json_deserializer=_json_loads)
    except Exception as exc:  # a malformed URL or a missing driver
        raise UserError(f"CAMPAIGNFLOW_DATABASE_URL is not usable ({exc}); "
                        "use e.g. postgresql+psycopg://user@host/db or sqlite:///path.db") from None


def engine(url: str | None = None) -> Engine:
    """The engine for `url` (default: the configured store), with the schema migrated to head."""
    url = url or settings.get().store_url()
    with _lock:
        eng = _engines.get(url)
        if eng is None:
            eng = _engines[url] = _make_engine(url)
        if url not in _migrated:
            migrate(eng)
            _migrated.add(url)
    return eng


# The revision the models match: the one head of migrations/versions. Named here because asking alembic
# (ScriptDirectory.get_current_head) costs 0.25 s of imports on every command; alembic runs only when the
# store is elsewhere, and tests/test_migrations.py checks this is alembic's head.
SCHEMA_HEAD = "0007"


# Any fixed number, the same in every process: PostgreSQL's advisory lock for "migrating the store".
_MIGRATION_LOCK = 0x63666D69  # "cfmi"


def migrate(eng: Engine) -> None:
    """Bring the schema to the newest revision.

    Processes that start at once on a fresh store take turns: the migration runs under a lock (a
    PostgreSQL advisory lock, SQLite's write lock) and alembic reads the version once it holds it, so the
    first migrates and the others find the schema done.
    """
    try:
        with eng.connect() as conn:
            current = _schema_versions(conn)
    except Exception as exc:
        raise UserError(f"cannot reach the campaign store at {eng.url.render_as_string(hide_password=True)} ({exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0]}); check CAMPAIGNFLOW_DATABASE_URL") from None
    if current == {SCHEMA_HEAD}:
        return
    from alembic import command

    # write=True: SQLite BEGIN IMMEDIATE, which waits (busy timeout) for a migrating neighbour's commit.
    with eng.execution_options(write=True).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})  # until commit
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def alembic_config() -> Config:
    """alembic's configuration for the store's migrations (the connection goes in `attributes`)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _schema_versions(conn) -> set[str]:  # noqa: ANN001
    if not inspect(conn).has_table("alembic_version"):
        return set()
    return {r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))}


@contextmanager
def session(url: str | None = None, write: bool = False) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error (so a failed command writes nothing).

    `write=True` takes the store's write lock at the start (SQLite BEGIN IMMEDIATE);
    use it for read-check-write sequences such as recording a decision.
    """
    eng = engine(url)
    bind = eng.execution_options(write=True) if write else eng
    with Session(bind, expire_on_commit=False) as s:
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise


def dispose_all() -> None:
    with _lock:
        for eng in _engines.values():
            eng.dispose()
        _engines.clear()
        _migrated.clear()
