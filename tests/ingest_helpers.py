"""Helpers for the ingestion and KPI tests: register a campaign with metric sources, run a source."""

from __future__ import annotations

import datetime as dt

from campaignflow import db, ingest, store
from campaignflow.connectors.base import Http
from campaignflow.spec import validate_spec_data
from conftest import future_spec
from platform_servers import DEVELOPER_TOKEN, TOKEN

CREDS = {"google_ads": {"developer_token": DEVELOPER_TOKEN, "access_token": TOKEN},
         "meta": {"access_token": TOKEN}, "ga4": {"access_token": TOKEN}, "csv": {}}
API_PATH = {"google_ads": "/v21", "meta": "/v25.0", "ga4": "/v1beta"}


def register(sources: list[dict], campaign_id: str = "acme-spring", url: str | None = None, spec_dir="/",
             **changes) -> dict:
    """Register a campaign with these sources, as if its spec file were in `spec_dir` (CSV paths are relative to it)."""
    data = future_spec(id=campaign_id, **changes)
    data["measurement"] = {"sources": sources}
    spec = validate_spec_data(data)
    import yaml

    with db.session(url) as s:
        store.register_campaign(s, spec, yaml.safe_dump(data, sort_keys=False), str(spec_dir))
    return data


def start_of(data: dict) -> dt.date:
    return dt.date.fromisoformat(str(data["start"]))


class SleepLog(list):
    """A `sleep` that only records the waits, and a `clock` that moves by them (so the time cap sees them)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    def clock(self) -> float:
        import time

        return time.monotonic() + sum(self)


def run(source: str, kind: str, today: dt.date, since: dt.date | None = None, until: dt.date | None = None,
        credentials: dict | None = None, url: str | None = None, sleeps: SleepLog | None = None, **http_kw):
    sleeps = sleeps if sleeps is not None else SleepLog()
    http = Http(source, "", backoff=0.001, sleep=sleeps, clock=sleeps.clock, **http_kw)
    result = ingest.run_source(source, since, until, url=url, today=today, http=http,
                               credentials=CREDS[kind] if credentials is None else credentials)
    return result


def rows(url: str | None = None, source: str | None = None) -> list[dict]:
    from sqlmodel import select

    from campaignflow import models as m

    with db.session(url) as s:
        q = select(m.MetricDaily).order_by(m.MetricDaily.date, m.MetricDaily.platform_campaign, m.MetricDaily.ad_group,
                                           m.MetricDaily.ad)
        if source:
            q = q.where(m.MetricDaily.source == source)
        return [r.model_dump() for r in s.exec(q).all()]


def cursor(source: str, account: str, url: str | None = None):
    from campaignflow.models_ingest import IngestCursor

    with db.session(url) as s:
        c = s.get(IngestCursor, (source, account))
        return c.last_date if c else None


def runs(source: str, url: str | None = None) -> list:
    with db.session(url) as s:
        return [r.model_dump() for r in ingest.last_runs(s, source)]


def meta_source(server, name: str = "meta-main", **kw) -> dict:
    """A Meta source reading the local platform server's campaign c-1."""
    return {"name": name, "kind": "meta", "account": "act_1234", "base_url": server.url + API_PATH["meta"],
            "campaigns": ["c-1"], **kw}


def measure(campaign_id: str):
    """The measurement step as the lifecycle flow runs it: read each source (its own transactions), then
    report from the stored rows in the step's transaction."""
    from campaignflow import lifecycle

    with db.session() as s:
        names = lifecycle.measurement_sources(s, campaign_id)
    refreshed = [ingest.refresh(name) for name in names]
    with db.session() as s:
        return lifecycle.measurement(s, campaign_id, refreshed)
