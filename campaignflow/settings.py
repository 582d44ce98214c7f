"""Where campaignflow keeps its files and which store and Prefect API it talks to.

Everything comes from the environment so the same code runs on a laptop
(embedded defaults) and on a fleet of workers (PostgreSQL, a shared Prefect).
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """`$CAMPAIGNFLOW_HOME`, default `~/.campaignflow`; created on first use."""
    path = Path(os.environ.get("CAMPAIGNFLOW_HOME") or Path.home() / ".campaignflow").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url() -> str:
    """`$CAMPAIGNFLOW_DATABASE_URL`, default a SQLite file in the home folder."""
    url = os.environ.get("CAMPAIGNFLOW_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{home() / 'campaignflow.db'}"


def local_server_port() -> int:
    return int(os.environ.get("CAMPAIGNFLOW_SERVER_PORT", "4280"))


def gate_poll_seconds() -> float:
    """How often a waiting flow looks for its decision (Prefect pause poll and store watch)."""
    return float(os.environ.get("CAMPAIGNFLOW_GATE_POLL", "1"))
