"""Engine, sessions and migrations for the campaign store.

SQLite by default (WAL, so the CLI can read while a flow writes); any
SQLAlchemy URL through `CAMPAIGNFLOW_DATABASE_URL`, PostgreSQL included.
The schema is created and upgraded only by the migrations in migrations/.
"""

from __future__ import annotations

import json
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import orjson
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from campaignflow import settings
from campaignflow.errors import UserError

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


def schema_heads() -> set[str]:
    """The newest revision of each migration branch, read from the files (importing alembic costs 0.4 s)."""
    revisions, parents = set(), set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        text = path.read_text()
        rev = re.search(r"^revision\s*=\s*['\"](\w+)['\"]", text, re.M)
        down = re.search(r"^down_revision\s*=\s*(.+)$", text, re.M)
        if rev:
            revisions.add(rev.group(1))
            parents.update(re.findall(r"['\"](\w+)['\"]", down.group(1)) if down else [])
    return revisions - parents


# Any fixed number, the same in every process: PostgreSQL's advisory lock for "migrating the store".
_MIGRATION_LOCK = 0x63666D69  # "cfmi"


def migrate(eng: Engine) -> None:
    """Bring the schema to the newest revision (all heads: feature areas add their own branches).

    Processes that start at once on a fresh store take turns: the migration runs under a lock (a
    PostgreSQL advisory lock, SQLite's write lock) and re-reads the version once it holds it, so the
    first migrates and the others find the schema done.
    """
    heads = schema_heads()
    try:
        with eng.connect() as conn:
            current = _schema_versions(conn)
    except Exception as exc:
        raise UserError(f"cannot reach the campaign store at {eng.url.render_as_string(hide_password=True)} ({exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0]}); check CAMPAIGNFLOW_DATABASE_URL") from None
    if current == heads:
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # write=True: SQLite BEGIN IMMEDIATE, which waits (busy timeout) for a migrating neighbour's commit.
    with eng.execution_options(write=True).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})  # until commit
        if _schema_versions(conn) == heads:
            return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")


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
