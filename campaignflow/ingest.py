"""One run of one metric source, in plain Python: window, fetch, map, merge, cursor.

    plan   -> which days to read: from the cursor minus the look-back window
              (platforms revise recent days), up to today; or --since/--until
    fetch  -> the connector's pages, mapped to campaigns, spooled to a temp
              file (memory stays flat; the store is not touched yet)
    merge  -> one transaction: upsert every spooled row on the natural key,
              move the cursor, record the run

A 401, a malformed page or exhausted retries stop the run before `merge`, so
stored rows and the cursor stay as they were; the failed run is recorded
with its reason. The Prefect flow (flows/ingest_metrics.py), the CLI and
the lifecycle's measurement step all run sources through here.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlmodel import Session, select

from campaignflow import connectors, metrics
from campaignflow import models as m
from campaignflow.connectors.base import Http, MappingRule, SourceConfig, SourceError, redact
from campaignflow.errors import UserError
from campaignflow.models_ingest import IngestCursor, IngestionRun

Progress = Callable[["ProgressEvent"], None]
CHUNK_ROWS = 20_000
MAX_FIRST_RUN_DAYS = 3 * 365


@dataclass(frozen=True)
class ProgressEvent:
    done: int  # weight of the parts done (days, or files for csv)
    total: int
    rows: int
    part: str
    note: str = ""  # a retry or a wait, said as it happens (the bar alone would look frozen)


@dataclass
class Plan:
    config: SourceConfig
    since: dt.date | None
    until: dt.date | None
    cursor: dt.date | None
    trigger: str = "cli"

    @property
    def window(self) -> str:
        return f"{self.since} to {self.until}" if self.since else "every row of the files"


@dataclass
class RunResult:
    source: str
    account: str
    kind: str
    since: dt.date | None
    until: dt.date | None
    rows_fetched: int
    rows_written: int
    unmapped_rows: int
    requests: int
    retries: int
    cursor: dt.date | None
    run_id: int | None
    unmapped: list[tuple[str, str, str, int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.source}: {self.rows_written:,} rows written for {self.since or 'all days'}"
                f"{'' if self.since is None else f' to {self.until}'}"
                + (f", {self.unmapped_rows:,} unmapped" if self.unmapped_rows else "")
                + (f" ({self.retries} retried request(s))" if self.retries else "")
                + "".join(f"; warning: {w}" for w in self.warnings))


# -- which source ------------------------------------------------------------------------------

def _mapping_rule(campaign_id: str, source: Any) -> MappingRule:
    return MappingRule(campaign_id, frozenset(c.strip().lower() for c in source.campaigns),
                       source.campaign_match.lower() if source.campaign_match else None)


def source_config(s: Session, name: str) -> SourceConfig:
    """The source `name` as the registered campaigns declare it, with every campaign's claim on it."""
    from campaignflow.store import campaign_spec

    found: list[tuple[m.Campaign, Any, Any]] = []
    known: set[str] = set()
    for campaign in s.exec(select(m.Campaign).order_by(m.Campaign.created_at)).all():
        spec = campaign_spec(campaign)
        for source in spec.measurement.sources:
            known.add(source.name)
            if source.name == name:
                found.append((campaign, spec, source))
    if not found:
        hint = f"sources of registered campaigns: {', '.join(sorted(known))}" if known else \
            "no registered campaign has `measurement.sources`; add one to a spec and `campaignflow run` it"
        raise UserError(f"there is no metric source {name!r} ({hint})")
    first_campaign, first_spec, first = found[0]
    for campaign, _, source in found[1:]:
        for attr in ("kind", "account", "path", "base_url", "credentials"):
            if getattr(source, attr) != getattr(first, attr):
                raise UserError(f"campaigns {first_campaign.id!r} and {campaign.id!r} both name source {name!r} but "
                                f"with a different `{attr}` ({getattr(first, attr)!r} vs {getattr(source, attr)!r}); "
                                "one source name is one account: rename one of them")
    return SourceConfig(
        name=name, kind=first.kind, account=first.account, path=first.path,
        base_dir=Path(first_campaign.spec_dir or "."), columns=dict(first.columns),
        lookback_days=first.lookback_days, credentials=first.credentials, base_url=first.base_url,
        conversion_actions=list(first.conversion_actions), metrics=dict(first.metrics), currency=first_spec.currency,
        first_day=min(spec.start for _, spec, _ in found), schedule=first.schedule,
        rules=[_mapping_rule(c.id, src) for c, _, src in found], campaigns=[c.id for c, _, _ in found])


def source_names(s: Session) -> dict[str, SourceConfig]:
    """Every source the registered campaigns name, resolved."""
    from campaignflow.store import campaign_spec

    names: list[str] = []
    for campaign in s.exec(select(m.Campaign).order_by(m.Campaign.created_at)).all():
        names += [x.name for x in campaign_spec(campaign).measurement.sources if x.name not in names]
    return {n: source_config(s, n) for n in names}


# -- mapping platform campaigns to campaigns ----------------------------------------------------

class Mapper:
    """Platform campaign (id, name) -> campaignflow campaign id, or None when no campaign claims it.

    Explicit ids/names win over a naming convention, which wins over a campaign
    claiming the whole source. Answers are cached: a source has few campaigns.
    """

    def __init__(self, rules: list[MappingRule]):
        self.rules = rules
        self.catch_all = [r.campaign_id for r in rules if r.claims_all]
        self.cache: dict[tuple[str, str], str | None] = {}

    def __call__(self, platform_id: str, name: str) -> str | None:
        key = (platform_id, name)
        if key in self.cache:
            return self.cache[key]
        pid, lname = platform_id.strip().lower(), name.strip().lower()
        found = next((r.campaign_id for r in self.rules if r.names and (pid in r.names or lname in r.names)), None)
        if found is None:
            found = next((r.campaign_id for r in self.rules
                          if r.pattern and (fnmatch.fnmatchcase(lname, r.pattern) or fnmatch.fnmatchcase(pid, r.pattern))),
                         None)
        if found is None and len(self.catch_all) == 1:
            found = self.catch_all[0]
        self.cache[key] = found
        return found


# -- plan ---------------------------------------------------------------------------------------

def lookback_days(config: SourceConfig) -> int:
    if config.lookback_days is not None:
        return config.lookback_days
    return connectors.connector_class(config.kind).default_lookback_days


def plan(s: Session, config: SourceConfig, since: dt.date | None = None, until: dt.date | None = None,
         today: dt.date | None = None, trigger: str = "cli") -> Plan:
    """The window of this run: --since/--until when given, else the cursor minus the look-back, up to today."""
    cursor_row = s.get(IngestCursor, (config.name, config.account))
    cursor = cursor_row.last_date if cursor_row else None
    today = today or dt.date.today()
    windowed = connectors.connector_class(config.kind).windowed
    if since is not None and until is not None and since > until:
        raise UserError(f"--since {since} is after --until {until}; swap them")
    if not windowed:
        return Plan(config, since, until, cursor, trigger)
    until = until or today
    if since is None:
        if cursor is not None:
            since = min(cursor + dt.timedelta(days=1), until) - dt.timedelta(days=lookback_days(config))
        else:
            since = config.first_day or until - dt.timedelta(days=max(lookback_days(config), 1) - 1)
            since = max(since, until - dt.timedelta(days=MAX_FIRST_RUN_DAYS))
        since = min(since, until)
    if since > until:
        raise UserError(f"--since {since} is after --until {until}; swap them")
    return Plan(config, since, until, cursor, trigger)


# -- fetch --------------------------------------------------------------------------------------

class Spool:
    """Rows waiting to be merged, pickled in chunks to a temporary file so memory stays flat."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="campaignflow-ingest-")
        self.rows = 0
        self.chunks = 0

    def write(self, chunk: list[tuple]) -> None:
        if chunk:
            pickle.dump(chunk, self.file, protocol=pickle.HIGHEST_PROTOCOL)
            self.rows += len(chunk)
            self.chunks += 1

    def read(self) -> Iterator[list[tuple]]:
        self.file.seek(0)
        for _ in range(self.chunks):
            yield pickle.load(self.file)

    def close(self) -> None:
        self.file.close()


@dataclass
class Fetched:
    spool: Spool
    requests: int
    retries: int
    unmapped_rows: int
    warnings: list[str] = field(default_factory=list)


def fetch(plan_: Plan, credentials: dict[str, str] | None = None, progress: Progress | None = None,
          http: Http | None = None) -> Fetched:
    """Read the window from the platform into a spool, each row mapped to its campaign (or None)."""
    config = plan_.config
    http = http or Http(config.name, config.account)
    http.source, http.account = config.name, config.account  # so every error names them
    if credentials is None:
        credentials = connectors.credentials_for(config) if connectors.connector_class(config.kind).required else {}
    connector = connectors.create(config, credentials, http)
    mapper = Mapper(config.rules)
    name = config.name
    spool = Spool()
    parts = connector.parts(plan_.since, plan_.until)
    total = sum(p.weight for p in parts)
    done = unmapped = 0
    buffer: list[tuple] = []
    current = ""
    if progress:
        http.on_notice = lambda note: progress(ProgressEvent(done, total, spool.rows + len(buffer), current, note))
    try:
        for part in parts:
            current = str(part)
            for page in connector.pages(part):
                for (date, account, pc, ad_group, ad, pc_name, imp, clicks, spend, conv, value, cur) in page:
                    campaign_id = mapper(pc, pc_name)
                    if campaign_id is None:
                        unmapped += 1
                    buffer.append((date, name, account, pc, ad_group, ad, pc_name, campaign_id,
                                   imp, clicks, spend, conv, value, cur))
                if len(buffer) >= CHUNK_ROWS:
                    spool.write(buffer)
                    buffer = []
                if progress:
                    progress(ProgressEvent(done, total, spool.rows + len(buffer), str(part)))
            done += part.weight
            if progress:
                progress(ProgressEvent(done, total, spool.rows + len(buffer), str(part)))
        spool.write(buffer)
    except BaseException:
        spool.close()
        raise
    return Fetched(spool, http.stats.requests, http.stats.retries, unmapped, connector.warnings())


# -- merge --------------------------------------------------------------------------------------

def merge(s: Session, plan_: Plan, fetched: Fetched, started: dt.datetime | None = None) -> RunResult:
    """Upsert the spooled rows, move the cursor and record the run, all in the session's transaction."""
    config = plan_.config
    try:
        written = metrics.upsert_tuples(s, fetched.spool.read())
    finally:
        fetched.spool.close()
    run = IngestionRun(source=config.name, account=config.account, kind=config.kind, trigger=plan_.trigger,
                       status="succeeded", since=plan_.since, until=plan_.until, requests=fetched.requests,
                       retries=fetched.retries, rows_fetched=fetched.spool.rows, rows_written=written,
                       unmapped_rows=fetched.unmapped_rows, warnings="\n".join(fetched.warnings),
                       started_at=started or m.utcnow(), finished_at=m.utcnow())
    s.add(run)
    s.flush()
    cursor = s.get(IngestCursor, (config.name, config.account))
    new_date = plan_.until if plan_.until is not None else _last_day(s, config)
    if cursor is None:
        cursor = IngestCursor(source=config.name, account=config.account, kind=config.kind)
    if new_date is not None and (cursor.last_date is None or new_date > cursor.last_date):
        cursor.last_date = new_date  # a backfill of older days never moves the cursor back
    cursor.last_run_id, cursor.updated_at = run.id, m.utcnow()
    s.add(cursor)
    return RunResult(config.name, config.account, config.kind, plan_.since, plan_.until, fetched.spool.rows, written,
                     fetched.unmapped_rows, fetched.requests, fetched.retries, cursor.last_date, run.id,
                     metrics.unmapped(s, config.name) if fetched.unmapped_rows else [], fetched.warnings)


def _last_day(s: Session, config: SourceConfig) -> dt.date | None:
    from sqlalchemy import func

    t = m.MetricDaily
    return s.exec(select(func.max(t.date)).where(t.source == config.name, t.account == config.account)).one()


def record_failure(s: Session, plan_: Plan, error: BaseException, started: dt.datetime | None = None,
                   requests: int = 0, retries: int = 0, secrets: frozenset[str] | set[str] = frozenset()) -> None:
    config = plan_.config
    s.add(IngestionRun(source=config.name, account=config.account, kind=config.kind, trigger=plan_.trigger,
                       status="failed", since=plan_.since, until=plan_.until, requests=requests, retries=retries,
                       error=redact(str(error), secrets)[:2000], started_at=started or m.utcnow(), finished_at=m.utcnow()))


# -- the whole run ------------------------------------------------------------------------------

def run_source(source: str | SourceConfig, since: dt.date | None = None, until: dt.date | None = None, *,
               url: str | None = None, credentials: dict[str, str] | None = None, progress: Progress | None = None,
               http: Http | None = None, trigger: str = "cli", today: dt.date | None = None) -> RunResult:
    """Plan, fetch and merge one source; each store step in its own short transaction."""
    from campaignflow import db

    started = m.utcnow()
    with db.session(url) as s:
        config = source if isinstance(source, SourceConfig) else source_config(s, source)
        the_plan = plan(s, config, since, until, today=today, trigger=trigger)
    http = http or Http(config.name, config.account)
    try:
        fetched = fetch(the_plan, credentials, progress, http)
    except SourceError as exc:
        with db.session(url) as s:
            record_failure(s, the_plan, exc, started, http.stats.requests, http.stats.retries, http.secrets)
        raise
    if progress:
        progress(ProgressEvent(1, 1, fetched.spool.rows, "writing to the store"))
    with db.session(url, write=True) as s:
        return merge(s, the_plan, fetched, started)


def run_in_session(s: Session, config: SourceConfig, *, trigger: str = "lifecycle",
                   credentials: dict[str, str] | None = None, http: Http | None = None,
                   today: dt.date | None = None) -> RunResult:
    """`run_source` inside a caller's transaction (the lifecycle step): the merge is a savepoint."""
    started = m.utcnow()
    the_plan = plan(s, config, today=today, trigger=trigger)
    http = http or Http(config.name, config.account)
    try:
        fetched = fetch(the_plan, credentials, None, http)
    except SourceError as exc:
        record_failure(s, the_plan, exc, started, http.stats.requests, http.stats.retries, http.secrets)
        raise
    with s.begin_nested():
        return merge(s, the_plan, fetched, started)


def last_runs(s: Session, source: str | None = None, limit: int = 20) -> list[IngestionRun]:
    query = select(IngestionRun).order_by(IngestionRun.id.desc()).limit(limit)
    if source:
        query = query.where(IngestionRun.source == source)
    return list(s.exec(query).all())
