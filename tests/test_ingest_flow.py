"""The ingest-metrics flow on a real Prefect server (test harness), the credentials blocks, the deployments,
and the `campaignflow ingest` / `kpis` commands run as a user would."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlmodel import select

from campaignflow import db
from campaignflow import models as m
from campaignflow.connectors.base import AuthError
from conftest import cli
from ingest_helpers import meta_source, register, rows, start_of
from platform_servers import TOKEN, PlatformServer, days, meta_row


@pytest.fixture
def server():
    with PlatformServer(meta_page_size=5) as srv:
        yield srv


def fill(server: PlatformServer, start: dt.date, n: int = 6) -> None:
    for d in days(start, n):
        server.meta.append(meta_row(d, "c-1", "Spring - Leads", "a1", 500, 20, 80.0, leads=1))
        server.meta.append(meta_row(d, "c-9", "Someone else's", "z1", 50, 2, 5.0))


@pytest.mark.prefect
def test_flow_ingests_with_a_credentials_block_and_flags_goals(prefect_api, home, server):
    from prefect.client.orchestration import get_client

    from blocks.platform_credentials import MetaCredentials
    from flows.ingest_metrics import ingest_metrics

    MetaCredentials(access_token=TOKEN).save("acme-meta-test", overwrite=True)
    data = register([meta_source(server, credentials="acme-meta-test")])
    start = start_of(data)
    fill(server, start)

    result = ingest_metrics("meta-main", since=start, until=start + dt.timedelta(days=5), trigger="test")

    assert result["rows_written"] == 12 and result["unmapped_rows"] == 6
    assert result["unmapped"][0][1] == "c-9"
    assert result["goals"][0]["campaign"] == "acme-spring"
    assert "registrations" in result["goals"][0]["off_track"]  # 6 leads against a line towards 600
    assert len(rows()) == 12
    with db.session() as s:
        events = s.exec(select(m.AuditEvent).where(m.AuditEvent.action == "kpi.off_track")).all()
    assert {e.subject for e in events} >= {"registrations"}
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name("ingest-meta")
        rate = client.read_global_concurrency_limit_by_name("ingest-meta-requests")
    assert limit.limit == 2 and rate.slot_decay_per_second == 2.0


@pytest.mark.prefect
def test_flow_with_a_missing_credentials_block_fails_clearly(prefect_api, home, server):
    from flows.ingest_metrics import ingest_metrics

    data = register([meta_source(server, credentials="no-such-block")])
    with pytest.raises(AuthError, match="no Meta Ads Credentials block named 'no-such-block'"):
        ingest_metrics("meta-main", since=start_of(data), until=start_of(data))
    assert rows() == []


@pytest.mark.prefect
def test_cli_ingest_through_prefect_then_kpis(prefect_api, home, server):
    data = register([meta_source(server)])
    start = start_of(data)
    fill(server, start)
    env = {"CAMPAIGNFLOW_META_ACCESS_TOKEN": TOKEN}

    done = cli("ingest", "meta-main", "--since", str(start), "--until", str(start + dt.timedelta(days=5)), env=env)

    assert done.returncode == 0, done.stderr
    assert "meta-main: 12 rows written" in done.stdout
    assert "c-9" in done.stdout and "Someone else's" in done.stdout
    assert "OFF TRACK" in done.stdout and "Traceback" not in done.stdout + done.stderr
    report = cli("kpis", "acme-spring", "--json")
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["to_date"]["conversions"] == 6 and data["to_date"]["spend"] == 480
    assert data["sources"][0]["last_run"]["status"] == "succeeded"
    assert len(data["daily"]) == 6 and data["daily"][-1]["to_date"]["cpa"] == 80
    table = cli("kpis", "acme-spring")
    assert "registrations" in table.stdout and "off track" in table.stdout

    expired = cli("ingest", "meta-main", env={"CAMPAIGNFLOW_META_ACCESS_TOKEN": "expired"})
    assert expired.returncode == 1, expired.stdout
    assert "error: source 'meta-main' (account act_1234):" in expired.stderr and "cursor did not move" in expired.stderr
    assert "Traceback" not in expired.stdout + expired.stderr


def test_cli_ingest_local_and_its_errors(home, server):
    data = register([meta_source(server)])
    start = start_of(data)
    fill(server, start, 3)
    env = {"CAMPAIGNFLOW_META_ACCESS_TOKEN": TOKEN}

    ok = cli("ingest", "meta-main", "--local", "--since", str(start), "--until", str(start + dt.timedelta(days=2)), env=env)
    assert ok.returncode == 0, ok.stderr
    assert "6 rows written" in ok.stdout and "3 rows belong to no campaign" in ok.stdout

    bad_date = cli("ingest", "meta-main", "--since", "2027-13-01", env=env)
    assert bad_date.returncode == 1
    assert "error: --since '2027-13-01' is not a date; write it as YYYY-MM-DD" in bad_date.stderr

    expired = cli("ingest", "meta-main", "--local", env={"CAMPAIGNFLOW_META_ACCESS_TOKEN": "expired"})
    assert expired.returncode == 1 and "Traceback" not in expired.stderr
    assert "error: source 'meta-main' (account act_1234):" in expired.stderr and "code 190" in expired.stderr

    unknown = cli("ingest", "meta-mian", "--local")
    assert unknown.returncode == 1 and "no metric source 'meta-mian' (sources of registered campaigns: meta-main)" in unknown.stderr

    chart = home.parent / "kpis.html"
    shown = cli("kpis", "acme-spring", "--html", str(chart))
    assert shown.returncode == 0, shown.stderr
    page = chart.read_text()
    assert page.count('<figure class="chart"') == 3 and "registrations" in page and "spend against budget" in page
    unwritable = cli("kpis", "acme-spring", "--html", str(home.parent / "missing" / "x.html"))
    assert unwritable.returncode == 1 and "--html" in unwritable.stderr and "pick a writable path" in unwritable.stderr

    nobody = cli("kpis", "nope")
    assert nobody.returncode == 1 and "there is no campaign 'nope'" in nobody.stderr


def test_one_deployment_per_source_on_its_cron(home, server):
    from deployments.ingest import source_deployments

    register([meta_source(server, schedule="30 5 * * *"),
              {"name": "ga4-web", "kind": "ga4", "account": "312345678"}])
    deployments = {d.name: d for d in source_deployments()}
    assert set(deployments) == {"ingest-meta-main", "ingest-ga4-web"}
    assert deployments["ingest-meta-main"].schedules[0].schedule.cron == "30 5 * * *"
    assert deployments["ingest-ga4-web"].schedules[0].schedule.cron == "0 6 * * *"
    assert deployments["ingest-meta-main"].parameters == {"source": "meta-main", "trigger": "schedule"}


@pytest.mark.prefect
def test_flow_keeps_the_token_out_of_prefect_and_logs_each_retry(prefect_api, home, server):
    """Issue 13: a token echoed by an error page never reaches Prefect's database; retries are in the run's log."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from blocks.platform_credentials import MetaCredentials
    from flows.ingest_metrics import ingest_metrics

    MetaCredentials(access_token=TOKEN).save("acme-meta-echo", overwrite=True)
    data = register([meta_source(server, credentials="acme-meta-echo")])
    start = start_of(data)
    server.fail_next("meta", 503, {"error": {"message": "Service temporarily unavailable", "code": 2,
                                             "is_transient": True}})
    server.fail_next("meta", 404, f"<pre>GET /v25.0/act_1234/insights?access_token={TOKEN}\n"
                                  f"Authorization: Bearer {TOKEN}</pre>")

    state = ingest_metrics(since=start, until=start, source="meta-main", return_state=True)
    APILogHandler().flush()  # logs go to the API in batches: send them now

    assert state.is_failed()
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        task_runs = client.read_task_runs()
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    texts = [flow_run.state.message or ""] + [t.state.message or "" for t in task_runs if t.flow_run_id == flow_run_id] \
        + [log.message for log in logs]
    stored = "\n".join(texts)
    assert "HTTP 404" in stored and "[redacted]" in stored
    assert TOKEN not in stored
    assert any("retry 2 of 6" in log.message and "waiting" in log.message for log in logs), [l.message for l in logs]
