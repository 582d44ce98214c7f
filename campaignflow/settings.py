"""campaignflow's configuration: one `Settings` object read from the environment.

The same code runs on a laptop (embedded defaults) and on a fleet of workers
(PostgreSQL, a shared Prefect) because everything comes from `CAMPAIGNFLOW_*`
variables, plus the few Prefect variables campaignflow itself looks at. This is
the only module that reads the environment.

Settings are read when asked (`get()`), so a change to the environment (a test's
monkeypatch, `localserver.configure`) counts from the next call. Building them
costs about a millisecond, so `get()` keeps the last one while the variables it
reads are unchanged; callers that loop still read once before their loop.

Three families of variables have names made from data, so they are not fields:
`CAMPAIGNFLOW_CHANNEL_<NAME>`, `CAMPAIGNFLOW_<KIND>_<FIELD>` and the ingestion
limits per platform; `channel_variables`, `credential_variables` and
`ingest_limit` list them.

`python -m campaignflow.settings --markdown` prints the README's configuration table.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, SecretStr, ValidationError
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from campaignflow.errors import UserError

PREFIX = "CAMPAIGNFLOW_"
DEFAULT_MAX_MINUTES = 10.0


def _minutes(value: object) -> object:
    """A positive, finite number of minutes; the refusal says what to set."""
    try:
        minutes = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        minutes = float("nan")
    if not math.isfinite(minutes) or minutes <= 0:
        raise PydanticCustomError("minutes", f"is not a number of minutes; set it to e.g. 30, or unset it for the "
                                             f"default of {DEFAULT_MAX_MINUTES:g}")
    return minutes


class Settings(BaseSettings):
    """Every setting campaignflow reads, with its variable (`CAMPAIGNFLOW_` + the field name, upper case)."""

    # An empty variable counts as unset, as `export CAMPAIGNFLOW_WEB_URL=` is meant to be.
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, extra="ignore", frozen=True)

    home: Path = Field(Path("~/.campaignflow"), description="where the SQLite store and the local Prefect server live")
    database_url: str | None = Field(
        None, description="any SQLAlchemy URL, e.g. `postgresql+psycopg://user@host/campaigns`",
        json_schema_extra={"shown_default": "SQLite file in the home"})
    server_port: int = Field(4280, description="port of the local Prefect server (its API and its UI)")
    gate_poll: float = Field(1.0, description="seconds between checks of a waiting gate")
    web_url: str | None = Field(None, description="where `campaignflow web` is reachable; turns on one-click "
                                                  "approval links in messages")
    secret: SecretStr | None = Field(None, description="key that signs one-click links",
                                     json_schema_extra={"shown_default": "a random key kept in the home"})
    api_token: SecretStr | None = Field(None, description="bearer token of the web app's JSON API (off when unset)")
    channels: Path | None = Field(None, description="the channels file (apprise URLs per channel name)",
                                  json_schema_extra={"shown_default": "`channels.yaml` in the home"})
    channels_block: str = Field("campaignflow-channels", description="name of the NotificationChannels Prefect block")
    notify_max_attempts: int = Field(12, description="delivery attempts before a message is dead")
    notify_backoff: float = Field(30.0, description="seconds before the first retry of a message, doubling to 2 h")
    ingest_max_minutes: Annotated[float, BeforeValidator(_minutes)] = Field(
        DEFAULT_MAX_MINUTES, description="time cap of one source run (requests, retries, waits)")
    ingest_cron: str = Field("0 6 * * *", description="schedule of a metric source without its own `schedule:`")
    run_limit: int = Field(20, description="lifecycle runs one `python -m deployments.lifecycle` runs at once")

    # Prefect's own variables, read here so that this stays the only module reading the environment.
    prefect_api_url: str | None = Field(None, validation_alias="PREFECT_API_URL",
                                        description="use an existing Prefect server instead",
                                        json_schema_extra={"shown_default": "the local server, started on demand"})
    prefect_ui_url: str | None = Field(None, validation_alias="PREFECT_UI_URL",
                                       description="the Prefect UI that links point to",
                                       json_schema_extra={"shown_default": "`PREFECT_API_URL` without `/api`"})
    prefect_home: Path | None = Field(None, validation_alias="PREFECT_HOME",
                                      description="Prefect's own files",
                                      json_schema_extra={"shown_default": "`prefect/` in the home"})

    def home_dir(self) -> Path:
        """The home folder, created on first use."""
        path = self.home.expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir() / 'campaignflow.db'}"


def variable(name: str) -> str:
    """The environment variable behind a field."""
    alias = Settings.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else PREFIX + name.upper()


_last: tuple[tuple, Settings] | None = None


def get() -> Settings:
    """The settings as the environment says now; a bad value is a one-line error naming its variable."""
    global _last
    # Only these variables feed Settings (names match case-insensitively, as pydantic-settings reads them).
    key = tuple(item for item in os.environ.items() if item[0].upper().startswith((PREFIX, "PREFECT_")))
    if _last is not None and _last[0] == key:
        return _last[1]
    try:
        _last = key, Settings()
        return _last[1]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "?"
            name = variable(name) if name in Settings.model_fields else name
            message = error["msg"] if error["type"] == "minutes" else f"is not valid: {error['msg'].lower()}"
            problems.append(f"{name}={error['input']!r} {message}")
        raise UserError("; ".join(problems)) from None


# -- families of variables whose names are made from data ---------------------------------------

def _family(prefix: str) -> dict[str, str]:
    """`{rest of the name: value}` for every set, non-blank variable that starts with `prefix`."""
    return {k[len(prefix):]: v for k, v in os.environ.items() if k.startswith(prefix) and v.strip()}


CHANNEL_PREFIX = PREFIX + "CHANNEL_"


def channel_variables() -> dict[str, str]:
    """`CAMPAIGNFLOW_CHANNEL_<NAME>=URL [URL ...]`: {full variable name: value}."""
    return {CHANNEL_PREFIX + k: v for k, v in _family(CHANNEL_PREFIX).items()}


def credential_prefix(kind: str) -> str:
    return f"{PREFIX}{kind.upper()}_"


def credential_variables(kind: str) -> dict[str, str]:
    """A platform's credentials, `CAMPAIGNFLOW_<KIND>_<FIELD>`: {field (lower case): value}."""
    return {k.lower(): v for k, v in _family(credential_prefix(kind)).items()}


def ingest_limit(kind: str, limit: str) -> str | None:
    """`CAMPAIGNFLOW_INGEST_<LIMIT>_<KIND>` (LIMIT is CONCURRENCY or RPS), or None when unset."""
    return _family(f"{PREFIX}INGEST_{limit.upper()}_").get(kind.upper())


FAMILIES = [  # (variable, default, meaning): documented in the table beside the fields
    ("CAMPAIGNFLOW_CHANNEL_<NAME>", "none", "apprise URLs (space-separated) of channel `<name>` (`TEAM_CHAT` names `team-chat`)"),
    ("CAMPAIGNFLOW_<KIND>_<FIELD>", "none", "a platform credential, e.g. `CAMPAIGNFLOW_META_ACCESS_TOKEN` (docs/ingestion.md)"),
    ("CAMPAIGNFLOW_INGEST_CONCURRENCY_<KIND>", "`2`", "runs that may read one platform at once (first use only; then tune in the Prefect UI)"),
    ("CAMPAIGNFLOW_INGEST_RPS_<KIND>", "`5` (Meta `2`)", "requests per second to one platform (first use only; then tune in the Prefect UI)"),
]


# -- the README's table --------------------------------------------------------------------------

def markdown_table() -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        shown = extra.get("shown_default") or ("none" if field.default is None else f"`{field.default:g}`"
                                               if isinstance(field.default, float) else f"`{field.default}`")
        rows.append(f"| `{variable(name)}` | {shown} | {field.description} |")
    rows += [f"| `{name}` | {default} | {meaning} |" for name, default, meaning in FAMILIES]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m campaignflow.settings --markdown")
    print(markdown_table(), end="")
