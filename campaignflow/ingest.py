"""One run of one metric source, in plain Python: window, fetch, map, merge, cursor.

    plan   -> which days to read: from the cursor minus the look-back window
              (platforms revise recent days), up to today; or --since/--until
    fetch  -> the connector's pages, each row checked (`row_problem`: numbers
              within bounds, dates near the campaigns), mapped to campaigns,
              spooled to a temp file (memory stays flat; the store is not
              touched yet)
    merge  -> one transaction: upsert every spooled row on the natural key,
              move the cursor, record the run

A 401, a malformed page, a refused row or exhausted retries stop the run
before `merge`, so stored rows and the cursor stay as they were; the failed
run is recorded with its reason. The Prefect flow (flows/ingest_metrics.py), the CLI and
the lifecycle's measurement step all run sources through here.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import math
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlmodel import Session, select

from campaignflow import connectors, metrics
from campaignflow import models as m
from campaignflow.connectors.base import (MEASURES, Http, MalformedResponse, MappingRule, MetricRow, RetriesExhausted,
                                          SourceConfig, SourceError, redact)
from campaignflow.errors import UserError
from campaignflow.models_ingest import IngestCursor, IngestionRun

Progress = Callable[["ProgressEvent"], None]
CHUNK_ROWS = 20_000
MAX_FIRST_RUN_DAYS = 3 * 365
# The dates a source may bring: from a year before the earliest start to a year after the latest end of the
# campaigns that use it (a baseline before, late conversions after); anything further is a typo or a wrong file.
DAYS_AROUND_CAMPAIGNS = 365
# The most one row (one ad on one day) may count. Counts fit PostgreSQL's integer column (2,147,483,647);
# money stays exact in a double and its sums stay finite, so `kpis` can always add them up.
MAX_COUNT = 1_000_000_000
MAX_MONEY = 1_000_000_000_000
MAX_VALUE = {"impressions": MAX_COUNT, "clicks": MAX_COUNT, "conversions": MAX_COUNT,
             "spend": MAX_MONEY, "conversion_value": MAX_MONEY}
WHOLE = ("impressions", "clicks")
# Settings of a source that every campaign naming it must declare alike: one source is read once, one way.
SHARED_SETTINGS = ("kind", "account", "path", "base_url", "credentials", "conversion_actions", "columns",
                   "metrics", "lookback_days", "schedule")


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
    dates: tuple[dt.date, dt.date] | None = None  # the days a row may have (None: no campaign uses the source)
    backfill: bool = False  # --since/--until given: the cursor neither guides nor follows this run

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
        conflict = source_conflict(name, (first_campaign.id, first, first_campaign.spec_dir),
                                   (campaign.id, source, campaign.spec_dir))
        if conflict:
            raise conflict
    return SourceConfig(
        name=name, kind=first.kind, account=first.account, path=first.path,
        base_dir=Path(first_campaign.spec_dir or "."), columns=dict(first.columns),
        lookback_days=first.lookback_days, credentials=first.credentials, base_url=first.base_url,
        conversion_actions=list(first.conversion_actions), metrics=dict(first.metrics), currency=first_spec.currency,
        first_day=min(spec.start for _, spec, _ in found), schedule=first.schedule,
        rules=[_mapping_rule(c.id, src) for c, _, src in found], campaigns=[c.id for c, _, _ in found])


def _setting(source: Any, attr: str, spec_dir: str) -> Any:
    value = getattr(source, attr)
    if attr == "path" and value:
        return os.path.normpath(os.path.join(spec_dir or ".", value))  # relative paths mean each spec's own folder
    if attr == "conversion_actions":
        return sorted(value)
    return value


def source_conflict(name: str, one: tuple[str, Any, str], other: tuple[str, Any, str]) -> UserError | None:
    """Two campaigns' declarations of one source, as (campaign id, source, spec folder): the first setting that
    differs, as the error that names both campaigns; None when they agree."""
    (one_id, one_source, one_dir), (other_id, other_source, other_dir) = one, other
    for attr in SHARED_SETTINGS:
        mine, theirs = _setting(one_source, attr, one_dir), _setting(other_source, attr, other_dir)
        if mine != theirs:
            return UserError(f"campaigns {one_id!r} and {other_id!r} both name source {name!r} but with a different "
                             f"`{attr}` ({mine!r} vs {theirs!r}); one source is read once, one way: give both the "
                             f"same `{attr}`, or give one of them another source name")
    return None


def check_sources(s: Session, spec: Any, spec_dir: str) -> None:
    """Refuse a spec about to be registered whose sources contradict those of registered campaigns, or whose
    CSV `path` leads outside its own folder (symlinks followed)."""
    from campaignflow.connectors.csv import inside_folder
    from campaignflow.store import campaign_spec

    mine = {x.name: x for x in spec.measurement.sources}
    for x in mine.values():
        if x.kind == "csv" and x.path and inside_folder(Path(spec_dir or "."), x.path) is None:
            raise UserError(f"source {x.name!r}: `path` {x.path!r} leads outside the spec's folder; put the exports "
                            "in that folder (or below it) and give `path` relative to it")
    if not mine:
        return
    for campaign in s.exec(select(m.Campaign).where(m.Campaign.id != spec.id).order_by(m.Campaign.created_at)).all():
        for theirs in campaign_spec(campaign).measurement.sources:
            if theirs.name in mine:
                conflict = source_conflict(theirs.name, (campaign.id, theirs, campaign.spec_dir),
                                           (spec.id, mine[theirs.name], str(spec_dir)))
                if conflict:
                    raise conflict


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
    return connectors.connector_class(config.kind).options.lookback_days


def allowed_dates(s: Session, config: SourceConfig) -> tuple[dt.date, dt.date] | None:
    """The days a row of this source may have: around the campaigns that use it (DAYS_AROUND_CAMPAIGNS)."""
    from sqlalchemy import func

    first, last = s.exec(select(func.min(m.Campaign.start), func.max(m.Campaign.end))
                         .where(m.Campaign.id.in_(config.campaigns))).one()
    if first is None:
        return None
    around = dt.timedelta(days=DAYS_AROUND_CAMPAIGNS)
    return first - around, last + around


def describe_dates(dates: tuple[dt.date, dt.date]) -> str:
    return (f"{dates[0]} to {dates[1]}, a year before the earliest start to a year after the latest end of the "
            "campaigns using the source")


def plan(s: Session, config: SourceConfig, since: dt.date | None = None, until: dt.date | None = None,
         today: dt.date | None = None, trigger: str = "cli") -> Plan:
    """The window of this run: --since/--until when given, else the cursor minus the look-back, up to today
    (or up to the last day a row may have, when the campaigns ended long ago)."""
    cursor_row = s.get(IngestCursor, (config.name, config.account))
    cursor = cursor_row.last_date if cursor_row else None
    today = today or dt.date.today()
    windowed = connectors.connector_class(config.kind).windowed
    dates = allowed_dates(s, config)
    if since is not None and until is not None and since > until:
        raise UserError(f"--since {since} is after --until {until}; swap them")
    for option, day in (("--since", since), ("--until", until)):
        if dates and day is not None and not dates[0] <= day <= dates[1]:
            raise UserError(f"{option} {day} is outside the days source {config.name!r} may have rows for "
                            f"({describe_dates(dates)}); pick a day in that range")
    backfill = since is not None or until is not None
    if not windowed:
        return Plan(config, since, until, cursor, trigger, dates, backfill)
    until = until or (min(today, dates[1]) if dates else today)
    if since is None:
        if cursor is not None:
            since = min(cursor + dt.timedelta(days=1), until) - dt.timedelta(days=lookback_days(config))
        else:
            since = config.first_day or until - dt.timedelta(days=max(lookback_days(config), 1) - 1)
            since = max(since, until - dt.timedelta(days=MAX_FIRST_RUN_DAYS))
        since = min(max(since, dates[0]) if dates else since, until)
    if since > until:
        raise UserError(f"--since {since} is after --until {until}; swap them")
    return Plan(config, since, until, cursor, trigger, dates, backfill)


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


# -- the one check every row of every source passes before it is stored ---------------------------

def row_problem(row: MetricRow, dates: tuple[str, str] | None, may_be_unknown: frozenset[str]) -> str | None:
    """What is wrong with one row (dates as ISO text), or None: a date within `dates`, a platform campaign,
    and each measure a finite number from 0 to its MAX_VALUE (whole for counts), or None (unknown, stored as
    NULL) for a measure in `may_be_unknown`, the ones this source does not always report."""
    date, imp, clicks, spend, conv, value = row.date, row.impressions, row.clicks, row.spend, row.conversions, \
        row.conversion_value
    try:  # the common case in one expression (a NaN, None or text fails it and gets the detailed look below)
        if (row.platform_campaign and type(imp) is int and type(clicks) is int and 0 <= imp <= MAX_COUNT
                and 0 <= clicks <= MAX_COUNT and 0 <= spend <= MAX_MONEY and 0 <= conv <= MAX_COUNT
                and 0 <= value <= MAX_MONEY and (not dates or dates[0] <= date <= dates[1])):
            return None
    except TypeError:
        pass
    if dates and not dates[0] <= date <= dates[1]:
        return f"the date {date} is outside {dates[0]} to {dates[1]}"
    if not row.platform_campaign:
        return "it names no campaign (no campaign id or name)"
    for name, value in zip(MEASURES, (imp, clicks, spend, conv, value)):
        if value is None:
            if name in may_be_unknown:
                continue
            return f"{name} has no value; write 0 when there were none"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} is not a number"
        if name in WHOLE and not isinstance(value, int):
            return f"{name} is not a whole number"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{name} is not a finite number"
        if value < 0:
            return f"{name} is negative"
        if value > MAX_VALUE[name]:
            return f"{name} is larger than {MAX_VALUE[name]:,}, the most one row (one ad on one day) may have"
    return None


def _refuse(connector: Any, page: list, index: int, part: Any, problem: str, plan_: Plan) -> SourceError:
    row = page[index]
    where_in_page = getattr(page, "where", None)  # a page that knows its rows' origin (a CSV file's lines)
    where = where_in_page(index) if where_in_page else f"{part}, the row of {row.date} for campaign {row.platform_campaign!r}"
    hint = f" ({describe_dates(plan_.dates)})" if problem.startswith("the date") and plan_.dates else ""
    return connector.http.fail(MalformedResponse, f"{where}: {problem}{hint}; fix the source and run again")


@dataclass
class Fetched:
    spool: Spool
    requests: int
    retries: int
    unmapped_rows: int
    distinct_rows: int = 0  # rows stored: a key the platform sent twice is stored once (the later copy)
    unmapped: list[tuple[str, str, str, int]] = field(default_factory=list)  # this run's, per platform campaign
    warnings: list[str] = field(default_factory=list)


def fetch(plan_: Plan, credentials: dict[str, str] | None = None, progress: Progress | None = None,
          http: Http | None = None) -> Fetched:
    """Read the window from the platform into a spool, each row checked and mapped to its campaign (or None)."""
    config = plan_.config
    http = http or Http(config.name, config.account)
    http.source, http.account = config.name, config.account  # so every error names them
    if credentials is None:
        credentials = connectors.credentials_for(config) if connectors.connector_class(config.kind).required else {}
    connector = connectors.create(config, credentials, http)
    mapper = Mapper(config.rules)
    name = config.name
    dates = (plan_.dates[0].isoformat(), plan_.dates[1].isoformat()) if plan_.dates else None
    may_be_unknown = connector.unknown_measures()
    spool = Spool()
    parts = connector.parts(plan_.since, plan_.until)
    total = sum(p.weight for p in parts)
    done = 0
    keys: set[int] = set()  # hashes of the natural keys seen, to count the rows stored (memory: ~60 MB per million)
    unmapped: dict[str, list] = {}  # platform campaign -> [its name, rows]
    buffer: list[tuple] = []
    current = ""
    if progress:
        http.on_notice = lambda note: progress(ProgressEvent(done, total, spool.rows + len(buffer), current, note))
    try:
        for part in parts:
            current = str(part)
            for page in connector.pages(part):
                for i, row in enumerate(page):
                    problem = row_problem(row, dates, may_be_unknown)
                    if problem:
                        raise _refuse(connector, page, i, part, problem, plan_)
                    pc, pc_name = row.platform_campaign, row.platform_campaign_name
                    campaign_id = mapper(pc, pc_name)
                    if campaign_id is None:
                        unmapped.setdefault(pc, [pc_name, 0])[1] += 1
                    date, account, ad_group, ad = row.date, row.account, row.ad_group, row.ad
                    keys.add(hash((date, account, pc, ad_group, ad)))  # the row's natural key within its source
                    buffer.append((date, name, account, pc, ad_group, ad, pc_name, campaign_id, row.impressions,
                                   row.clicks, row.spend, row.conversions, row.conversion_value, row.currency))
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
    return Fetched(spool, http.stats.requests, http.stats.retries, sum(n for _, n in unmapped.values()), len(keys),
                   [(name, pc, pc_name, n) for pc, (pc_name, n) in sorted(unmapped.items())], connector.warnings())


# -- merge --------------------------------------------------------------------------------------

def merge(s: Session, plan_: Plan, fetched: Fetched, started: dt.datetime | None = None) -> RunResult:
    """Upsert the spooled rows, move the cursor and record the run, all in the session's transaction."""
    config = plan_.config
    try:
        metrics.upsert_tuples(s, fetched.spool.read())
    finally:
        fetched.spool.close()
    written = fetched.distinct_rows
    run = IngestionRun(source=config.name, account=config.account, kind=config.kind, trigger=plan_.trigger,
                       status="succeeded", since=plan_.since, until=plan_.until, requests=fetched.requests,
                       retries=fetched.retries, rows_fetched=fetched.spool.rows, rows_written=written,
                       unmapped_rows=fetched.unmapped_rows, warnings="\n".join(fetched.warnings),
                       started_at=started or m.utcnow(), finished_at=m.utcnow())
    s.add(run)
    s.flush()
    cursor = s.get(IngestCursor, (config.name, config.account))
    new_date = plan_.until if plan_.until is not None else metrics.last_day(s, config.name, config.account)
    if cursor is None:
        cursor = IngestCursor(source=config.name, account=config.account, kind=config.kind)
    if new_date is not None and (cursor.last_date is None or new_date > cursor.last_date):
        cursor.last_date = new_date  # a backfill of older days never moves the cursor back
    cursor.last_run_id, cursor.updated_at = run.id, m.utcnow()
    s.add(cursor)
    return RunResult(config.name, config.account, config.kind, plan_.since, plan_.until, fetched.spool.rows, written,
                     fetched.unmapped_rows, fetched.requests, fetched.retries, cursor.last_date, run.id,
                     fetched.unmapped, fetched.warnings)


def with_next_step(error: SourceError, plan_: Plan) -> SourceError:
    """`error` with what to run next, when trying again later may help (retries or the time cap ran out): a
    run from the cursor is continued by the next run, while a backfill (--since/--until) is not (the next run
    reads from the cursor), so the same window has to be run again."""
    if not isinstance(error, RetriesExhausted):
        return error
    if plan_.backfill:
        window = " ".join(f"--{o} {d}" for o, d in (("since", plan_.since), ("until", plan_.until)) if d)
        step = (f"this backfill is not continued by the next run: run `campaignflow ingest {plan_.config.name} "
                f"{window}` again later")
    else:
        step = "the next run continues from the same cursor"
    return type(error)(error.source, error.account, f"{error.what}; {step}")


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
        exc = with_next_step(exc, the_plan)
        with db.session(url) as s:
            record_failure(s, the_plan, exc, started, http.stats.requests, http.stats.retries, http.secrets)
        raise exc from None
    if progress:
        progress(ProgressEvent(1, 1, fetched.spool.rows, "writing to the store"))
    with db.session(url, write=True) as s:
        return merge(s, the_plan, fetched, started)


@dataclass(frozen=True)
class SourceRefresh:
    """One source read for the lifecycle's measurement step: what was written, or why it could not be read."""

    source: str
    summary: str = ""
    rows_written: int = 0
    problem: str = ""  # set when the source could not be read; the report then uses the rows stored before
    error: str = ""  # the whole error message, for the audit log


def refresh(source: str, run: Callable[..., RunResult] = run_source) -> SourceRefresh:
    """Read one source for the measurement step through `run` (its own transactions, never the step's);
    a source that cannot be read (no credentials yet, a revoked token) is reported, not raised."""
    try:
        result = run(source, trigger="lifecycle")
    except SourceError as exc:
        return SourceRefresh(source, problem=exc.what, error=str(exc))
    return SourceRefresh(source, result.summary(), result.rows_written)


def last_runs(s: Session, source: str | None = None, limit: int = 20) -> list[IngestionRun]:
    query = select(IngestionRun).order_by(IngestionRun.id.desc()).limit(limit)
    if source:
        query = query.where(IngestionRun.source == source)
    return list(s.exec(query).all())
