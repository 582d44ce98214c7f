"""Prefect tasks for metric ingestion: thin wrappers around campaignflow.ingest and campaignflow.metrics.

The platform limits are applied here: a global concurrency limit `ingest-<kind>`
(how many runs may read one platform at once, across all workers) and a
rate limit `ingest-<kind>-requests` taken before every HTTP request. Both
are created on first use from the connector's declared `limits` (overridden by
CAMPAIGNFLOW_INGEST_CONCURRENCY_<KIND>, CAMPAIGNFLOW_INGEST_RPS_<KIND>) and can
then be tuned in the Prefect UI.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

import blocks.platform_credentials  # noqa: F401  (registers the credentials-block loader)
from campaignflow import connectors, db, ingest, metrics, settings
from campaignflow.connectors.base import Http
from campaignflow.ingest import ProgressEvent, RunResult

# Extra progress listeners in this process (the CLI's progress bar); the Prefect artifact is always updated.
progress_listeners: list[Callable[[ProgressEvent], None]] = []


def limit_names(kind: str) -> tuple[str, str]:
    return f"ingest-{kind.replace('_', '-')}", f"ingest-{kind.replace('_', '-')}-requests"


def ensure_platform_limits(kind: str) -> None:
    """Create the platform's concurrency and request-rate limits if they do not exist yet (never overwrite)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    limits = connectors.connector_class(kind).limits
    if limits is None:  # a source that calls no platform (files)
        return
    runs, requests = limit_names(kind)
    concurrency = int(settings.ingest_limit(kind, "concurrency") or limits.concurrency)
    rps = float(settings.ingest_limit(kind, "rps") or limits.requests_per_second)
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        for name, limit, decay in ((runs, concurrency, None), (requests, max(int(rps * 2), 1), rps)):
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                fields = {"name": name, "limit": limit}
                if decay:
                    fields["slot_decay_per_second"] = decay
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(**fields))


@task(name="ingest-source", cache_policy=NO_CACHE)
def ingest_source(source: str, since: dt.date | None = None, until: dt.date | None = None,
                  trigger: str = "schedule") -> RunResult:
    """Read one source's window from its platform and merge it; one platform slot held while reading."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact
    from prefect.concurrency.sync import concurrency, rate_limit

    with db.session() as s:
        config = ingest.source_config(s, source)
    runs_limit, requests_limit = limit_names(config.kind)
    limited = connectors.connector_class(config.kind).limits is not None
    if limited:
        ensure_platform_limits(config.kind)
    artifact = create_progress_artifact(0.0, description=f"ingesting {source}")
    last = [-1.0]

    logger = get_run_logger()

    def progress(event: ProgressEvent) -> None:
        if event.note:  # each retry and wait goes to the run's log, so a slow platform is visible in the UI
            logger.warning(event.note)
        pct = 100.0 * event.done / event.total if event.total else 100.0
        if pct - last[0] >= 5 or pct == 100.0:  # a few updates, not one per page
            update_progress_artifact(artifact, pct, description=f"{source}: {event.rows:,} rows, {event.part}")
            last[0] = pct
        for listener in progress_listeners:
            listener(event)

    http = Http(config.name, config.account,
                before_request=(lambda: rate_limit(requests_limit, occupy=1, strict=False)) if limited else None)
    if limited:
        with concurrency(runs_limit, occupy=1, strict=False):
            return ingest.run_source(config, since, until, progress=progress, http=http, trigger=trigger)
    return ingest.run_source(config, since, until, progress=progress, http=http, trigger=trigger)


@task(name="refresh-source", cache_policy=NO_CACHE)
def refresh_source(source: str) -> ingest.SourceRefresh:
    """Read one source for the lifecycle's measurement step, within the platform's limits; a source that
    cannot be read is reported, not raised."""
    return ingest.refresh(source, run=ingest_source.fn)


@task(name="campaigns-fed-by", cache_policy=NO_CACHE)
def campaigns_fed_by(source: str) -> list[str]:
    """The campaigns whose rows a source carries (their goals are checked after it is ingested)."""
    with db.session() as s:
        return sorted({rule.campaign_id for rule in ingest.source_config(s, source).rules})


@task(name="check-goals", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def check_goals(campaign_id: str) -> dict:
    """KPIs against goals for one campaign after new rows; off-track goals become audit events (then chat)."""
    with db.session(write=True) as s:
        report = metrics.campaign_report(s, campaign_id)
        flagged = metrics.flag_off_track(s, campaign_id, report)
    return {"campaign": campaign_id, "as_of": report["as_of"], "flagged": flagged,
            "off_track": [g["name"] for g in report["goals"] if g["status"] == "off track"]}
