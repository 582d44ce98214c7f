"""Metric ingestion against local servers that answer in each platform's real format (no Prefect here)."""

from __future__ import annotations

import datetime as dt

import pytest

from campaignflow import db, ingest, settings
from campaignflow.connectors.base import AuthError, MalformedResponse, RetriesExhausted
from campaignflow.errors import UserError
from ingest_helpers import API_PATH, SleepLog, cursor, register, rows, run, runs, start_of
from platform_servers import (PlatformServer, days, ga4_row, google_ads_row, meta_row, meta_throttle)


@pytest.fixture
def server():
    with PlatformServer(batch_size=3, meta_page_size=4, ga4_page_size=5) as srv:
        yield srv


def source(kind: str, server: PlatformServer, name: str | None = None, **kw) -> dict:
    account = {"google_ads": "123-456-7890", "meta": "act_1234", "ga4": "312345678"}[kind]
    return {"name": name or kind.replace("_", "-"), "kind": kind, "account": account,
            "base_url": server.url + API_PATH[kind], **kw}


# -- Google Ads ---------------------------------------------------------------------------------

def test_google_ads_batches_micros_currency_and_unmapped_rows(home, server):
    data = register([source("google_ads", server, campaigns=["111"])])
    start = start_of(data)
    for d in days(start, 10):
        server.google_ads.append(google_ads_row(d, 111, "Spring - Search", 7, 1000, 50, 12.5, 2, 80))
        server.google_ads.append(google_ads_row(d, 999, "Brand - Always on", 8, 300, 9, 1.234567, 0, 0))
    today = start + dt.timedelta(days=9)

    result = run("google-ads", "google_ads", today, since=start)

    assert result.rows_written == 20 and result.rows_fetched == 20
    stored = rows(source="google-ads")
    assert len(stored) == 20
    mine = [r for r in stored if r["platform_campaign"] == "111"]
    assert {r["campaign_id"] for r in mine} == {"acme-spring"}
    assert mine[0]["spend"] == pytest.approx(12.5) and mine[0]["currency"] == "EUR"
    assert mine[0]["platform_campaign_name"] == "Spring - Search" and mine[0]["ad_group"] == "7"
    assert mine[0]["impressions"] == 1000 and mine[0]["conversion_value"] == 80
    other = [r for r in stored if r["platform_campaign"] == "999"]
    assert {r["campaign_id"] for r in other} == {None}, "unmapped rows are kept, not dropped"
    assert other[0]["spend"] == pytest.approx(1.234567)
    assert result.unmapped_rows == 10
    assert result.unmapped == [("google-ads", "999", "Brand - Always on", 10)]
    assert cursor("google-ads", "123-456-7890") == today
    call = next(r for r in server.requests if r["platform"] == "google_ads")
    assert call["path"] == "/v21/customers/1234567890/googleAds:searchStream"
    assert "FROM ad_group" in call["body"]["query"] and call["headers"]["developer-token"]


def test_google_ads_401_leaves_rows_and_cursor_untouched(home, server):
    data = register([source("google_ads", server)])
    start = start_of(data)
    server.google_ads += [google_ads_row(d, 111, "Spring", 7, 100, 5, 2.0) for d in days(start, 5)]
    run("google-ads", "google_ads", start + dt.timedelta(days=4), since=start)
    before, before_cursor = rows(), cursor("google-ads", "123-456-7890")
    server.google_ads[0]["clicks"] = 999

    with pytest.raises(AuthError) as err:
        run("google-ads", "google_ads", start + dt.timedelta(days=6),
            credentials={"developer_token": "test-developer-token", "access_token": "expired"})

    message = str(err.value)
    assert "source 'google-ads' (account 123-456-7890)" in message
    assert "HTTP 401" in message and "credentials" in message and "cursor did not move" in message
    assert rows() == before and cursor("google-ads", "123-456-7890") == before_cursor
    last = runs("google-ads")[0]
    assert last["status"] == "failed" and "HTTP 401" in last["error"]


def test_google_ads_stream_cut_mid_way_writes_nothing(home, server):
    data = register([source("google_ads", server)])
    start = start_of(data)
    server.google_ads += [google_ads_row(d, 111, "Spring", 7, 100, 5, 2.0) for d in days(start, 40)]
    server.corrupt("google_ads", 2)  # the second 31-day slice is cut off

    with pytest.raises(MalformedResponse, match="is not JSON"):
        run("google-ads", "google_ads", start + dt.timedelta(days=39), since=start)

    assert rows() == [] and cursor("google-ads", "123-456-7890") is None


def test_google_ads_refresh_token_and_revoked_refresh_token(home, server):
    data = register([source("google_ads", server)])
    start = start_of(data)
    server.google_ads.append(google_ads_row(start, 111, "Spring", 7, 100, 5, 2.0))
    creds = {"developer_token": "test-developer-token", "refresh_token": "good-refresh", "client_id": "id",
             "client_secret": "secret", "token_url": server.url + "/token"}
    assert run("google-ads", "google_ads", start, since=start, credentials=dict(creds)).rows_written == 1

    with pytest.raises(AuthError, match="refreshing the OAuth access token was refused.*invalid_grant"):
        run("google-ads", "google_ads", start, since=start, credentials={**creds, "refresh_token": "revoked"})


# -- Meta ---------------------------------------------------------------------------------------

def test_meta_pages_throttling_then_success(home, server):
    data = register([source("meta", server, campaign_match="spring*")])
    start = start_of(data)
    for d in days(start, 5):
        for ad in ("a1", "a2", "a3"):
            server.meta.append(meta_row(d, "c-1", "Spring - Leads", ad, 200, 10, 4.25, leads=2))
        server.meta.append(meta_row(d, "c-2", "Summer teaser", "b1", 50, 1, 1.0, purchases=1, purchase_value=30))
    status, body, headers = meta_throttle(17)
    server.fail_next("meta", status, body, headers)
    status, body, headers = meta_throttle(80000)
    headers["Retry-After"] = "3"
    server.fail_next("meta", status, body, headers)
    sleeps = SleepLog()

    result = run("meta", "meta", start + dt.timedelta(days=4), since=start, sleeps=sleeps)

    assert result.rows_written == 20 and result.retries == 2
    assert sleeps[1] == 3, "the wait the platform asked for is honoured"
    pages = [r for r in server.requests if r["platform"] == "meta"]
    assert len(pages) == 2 + 5  # two throttled answers, then 20 rows in pages of 4
    assert pages[-1]["query"]["after"] and pages[0]["query"]["level"] == "ad"
    stored = rows(source="meta")
    leads = [r for r in stored if r["platform_campaign"] == "c-1"]
    assert {r["campaign_id"] for r in leads} == {"acme-spring"}, "mapped by the naming convention"
    assert leads[0]["conversions"] == 2 and leads[0]["spend"] == pytest.approx(4.25)
    teaser = [r for r in stored if r["platform_campaign"] == "c-2"]
    assert teaser[0]["campaign_id"] is None and teaser[0]["conversion_value"] == 30


def test_meta_high_usage_slows_down_before_being_throttled(home, server):
    data = register([source("meta", server)])
    start = start_of(data)
    server.meta += [meta_row(start, "c-1", "Spring", f"a{i}", 1, 1, 1.0) for i in range(6)]
    server.meta_usage = 95
    sleeps = SleepLog()
    result = run("meta", "meta", start, since=start, sleeps=sleeps)
    assert result.rows_written == 6 and result.retries == 0
    assert sleeps == [60.0, 60.0], "one pause after each of the two pages while usage is at 95 %"


def test_meta_revision_inside_lookback_updates_not_duplicates(store_url, server):
    settings.get().home_dir()  # the SQLite store's folder
    data = register([source("meta", server)], url=store_url)
    start = start_of(data)
    server.meta += [meta_row(d, "c-1", "Spring", "a1", 100, 10, 5.0, leads=1) for d in days(start, 10)]
    day10 = start + dt.timedelta(days=9)
    run("meta", "meta", day10, since=start, url=store_url)
    assert len(rows(store_url)) == 10
    # Meta revises day 8 (late conversions) and reports a new day 11.
    server.meta[7] = meta_row(start + dt.timedelta(days=7), "c-1", "Spring", "a1", 100, 10, 5.0, leads=4)
    server.meta.append(meta_row(start + dt.timedelta(days=10), "c-1", "Spring", "a1", 100, 10, 5.0, leads=1))

    result = run("meta", "meta", day10 + dt.timedelta(days=1), url=store_url)  # from the cursor, with look-back

    assert result.since == start - dt.timedelta(days=18)  # the 28 days before the first new day
    stored = rows(store_url)
    assert len(stored) == 11, "re-read days overwrite; only the new day is added"
    assert stored[7]["conversions"] == 4
    assert cursor("meta", "act_1234", store_url) == day10 + dt.timedelta(days=1)


def test_meta_malformed_page_mid_stream_changes_nothing(home, server):
    data = register([source("meta", server)])
    start = start_of(data)
    server.meta += [meta_row(d, "c-1", "Spring", "a1", 100, 10, 5.0) for d in days(start, 12)]
    run("meta", "meta", start + dt.timedelta(days=3), since=start)
    before, before_cursor = rows(), cursor("meta", "act_1234")
    server.corrupt("meta", 2)

    with pytest.raises(MalformedResponse) as err:
        run("meta", "meta", start + dt.timedelta(days=11))

    assert "source 'meta' (account act_1234)" in str(err.value) and "page 2" in str(err.value)
    assert "not JSON" in str(err.value)
    assert rows() == before and cursor("meta", "act_1234") == before_cursor


def test_meta_expired_token_is_an_auth_error(home, server):
    data = register([source("meta", server)])
    with pytest.raises(AuthError, match="code 190.*Session has expired"):
        run("meta", "meta", start_of(data), credentials={"access_token": "old"})


def test_meta_bad_number_names_the_row_and_field(home, server):
    data = register([source("meta", server)])
    start = start_of(data)
    server.meta.append(meta_row(start, "c-1", "Spring", "a1", 100, 10, 5.0))
    server.meta[0]["spend"] = "12,50"
    with pytest.raises(MalformedResponse, match=r"row 1: spend is '12,50', not a number"):
        run("meta", "meta", start, since=start)
    assert rows() == []


def test_throttled_longer_than_the_run_may_wait(home, server):
    data = register([source("meta", server)])
    status, body, headers = meta_throttle(17)
    headers["x-business-use-case-usage"] = headers["x-business-use-case-usage"].replace(
        '"estimated_time_to_regain_access": 0', '"estimated_time_to_regain_access": 45')
    server.fail_next("meta", status, body, headers)
    with pytest.raises(RetriesExhausted, match="45 min"):
        run("meta", "meta", start_of(data), max_seconds=600)


# -- GA4 ----------------------------------------------------------------------------------------

def test_ga4_offset_paging_dates_and_utm_convention(home, server):
    data = register([source("ga4", server, campaign_match="spring_*")])
    start = start_of(data)
    for d in days(start, 4):
        server.ga4.append(ga4_row(d, "spring_launch", 1000, 40, 20.5, 3, 150.0))
        server.ga4.append(ga4_row(d, "spring_retarget", 300, 12, 6.0, 1, 40.0))
        server.ga4.append(ga4_row(d, "(not set)", 0, 0, 0, 0, 0))
    server.fail_next("ga4", 429, {"error": {"code": 429, "message": "Exhausted concurrent requests quota.",
                                            "status": "RESOURCE_EXHAUSTED"}}, {"Retry-After": "2"})
    sleeps = SleepLog()

    result = run("ga4", "ga4", start + dt.timedelta(days=3), since=start, sleeps=sleeps)

    assert sleeps == [2.0]
    assert result.rows_written == 12
    offsets = [r["body"]["offset"] for r in server.requests if r["platform"] == "ga4"][1:]
    assert offsets == ["0", "5", "10"]
    stored = rows(source="ga4")
    assert stored[0]["date"] == start and stored[0]["currency"] == "EUR"
    mapped = {r["platform_campaign"]: r["campaign_id"] for r in stored}
    assert mapped == {"spring_launch": "acme-spring", "spring_retarget": "acme-spring", "(not set)": None}


def test_ga4_daily_property_quota_stops_without_retrying(home, server):
    data = register([source("ga4", server)])
    server.fail_next("ga4", 429, {"error": {"code": 429, "message": "Exhausted property tokens per day for this "
                                            "property.", "status": "RESOURCE_EXHAUSTED"}})
    with pytest.raises(RetriesExhausted, match="GA4 property quota is used up.*tokens per day"):
        run("ga4", "ga4", start_of(data))
    assert [r["platform"] for r in server.requests] == ["ga4"]


def test_ga4_timeout_is_retried(home, server):
    data = register([source("ga4", server)])
    start = start_of(data)
    server.ga4.append(ga4_row(start, "spring", 10, 1, 1.0, 0, 0))
    server.stall_next("ga4", 1.5)
    result = run("ga4", "ga4", start, since=start, timeout=0.5)
    assert result.rows_written == 1 and result.retries == 1


def test_ga4_5xx_until_retries_run_out(home, server):
    data = register([source("ga4", server)])
    server.fail_next("ga4", 503, {"error": {"code": 503, "message": "The service is currently unavailable.",
                                            "status": "UNAVAILABLE"}}, times=3)
    with pytest.raises(RetriesExhausted, match="after 3 attempts.*HTTP 503"):
        run("ga4", "ga4", start_of(data), max_attempts=3)
    assert rows() == []


def test_ga4_answer_without_headers_is_malformed(home, server):
    data = register([source("ga4", server)])
    start = start_of(data)
    server.ga4 += [ga4_row(d, "spring", 1, 1, 1, 1, 1) for d in days(start, 3)]
    server.corrupt("ga4", 1)
    with pytest.raises(MalformedResponse, match="not a runReport answer"):
        run("ga4", "ga4", start + dt.timedelta(days=2), since=start)


# -- CSV, credentials, planning, spec ----------------------------------------------------------

def test_csv_export_and_a_missing_column(home, tmp_path):
    export = tmp_path / "exports"
    export.mkdir()
    (export / "week1.csv").write_text("Day,Campaign,Impr.,Clicks,Cost\n2027-02-01,Spring,100,5,12.5\n"
                                      "2027-02-02,Spring,120,6,13\n2027-02-02,Other,1,1,1\n")
    register([{"name": "li", "kind": "csv", "path": "exports", "account": "li-main", "campaigns": ["Spring"],
               "columns": {"date": "Day", "campaign": "Campaign", "impressions": "Impr.", "clicks": "Clicks",
                           "spend": "Cost"}}], spec_dir=tmp_path, start="2027-01-15")
    result = ingest.run_source("li")
    assert result.rows_written == 3 and result.unmapped_rows == 1
    again = ingest.run_source("li")
    assert again.rows_written == 3 and len(rows()) == 3
    (export / "week2.csv").write_text("Date,Campaign,Impr.,Clicks,Cost\n2027-02-03,Spring,1,1,1\n")
    with pytest.raises(MalformedResponse, match=r"week2.csv has no column\(s\) Day; map them with `columns:`"):
        ingest.run_source("li")
    assert len(rows()) == 3


def test_missing_credentials_name_the_fix(home, server, monkeypatch):
    data = register([source("meta", server)])
    monkeypatch.delenv("CAMPAIGNFLOW_META_ACCESS_TOKEN", raising=False)
    with pytest.raises(AuthError, match="no access_token for meta; .*CAMPAIGNFLOW_META_ACCESS_TOKEN"):
        ingest.run_source("meta", today=start_of(data))
    monkeypatch.setenv("CAMPAIGNFLOW_META_ACCESS_TOKEN", "test-access-token")
    assert ingest.run_source("meta", today=start_of(data)).rows_written == 0


def test_unknown_source_and_reversed_window(home, server):
    data = register([source("meta", server)])
    with pytest.raises(UserError, match="no metric source 'mta'.*sources of registered campaigns: meta"):
        ingest.run_source("mta")
    with pytest.raises(UserError, match="--since .* is after --until"):
        ingest.run_source("meta", since=start_of(data), until=start_of(data) - dt.timedelta(days=1))


def test_first_run_starts_at_the_campaign_start_and_lookback_overrides(home, server):
    data = register([source("google_ads", server, lookback_days=3)])
    start = start_of(data)
    with db.session() as s:
        config = ingest.source_config(s, "google-ads")
        first = ingest.plan(s, config, today=start + dt.timedelta(days=30))
    assert (first.since, first.until) == (start, start + dt.timedelta(days=30))
    run("google-ads", "google_ads", start + dt.timedelta(days=30))
    with db.session() as s:
        later = ingest.plan(s, ingest.source_config(s, "google-ads"), today=start + dt.timedelta(days=31))
    assert later.since == start + dt.timedelta(days=28)  # 3 days re-read before the cursor's next day


def test_two_campaigns_share_a_source_and_each_claims_its_own(home, server):
    register([source("meta", server, campaigns=["c-1"])], campaign_id="alpha")
    data = register([source("meta", server, campaigns=["Beta launch"])], campaign_id="beta")
    start = start_of(data)
    server.meta += [meta_row(start, "c-1", "Alpha", "a", 1, 1, 1), meta_row(start, "c-2", "Beta launch", "b", 1, 1, 1),
                    meta_row(start, "c-3", "Nobody's", "c", 1, 1, 1)]
    run("meta", "meta", start, since=start)
    assert {r["platform_campaign"]: r["campaign_id"] for r in rows()} == {"c-1": "alpha", "c-2": "beta", "c-3": None}


def test_conflicting_declarations_of_one_source(home, server):
    register([source("meta", server)], campaign_id="alpha")
    with pytest.raises(UserError, match="'alpha' and 'beta' both name source 'meta' but with a different `account`"):
        register([{**source("meta", server), "account": "act_999"}], campaign_id="beta")


def test_spec_problems_of_sources_name_field_and_fix():
    from campaignflow.errors import SpecInvalid
    from campaignflow.spec import validate_spec_data
    from conftest import future_spec

    data = future_spec()
    data["measurement"] = {"sources": [
        {"name": "gads", "kind": "google_ads", "account": "12345"},
        {"name": "fb", "kind": "meta"},
        {"name": "ga", "kind": "ga4", "account": "99", "columns": {"sessions": "sessions"}, "lookback_days": 400},
        {"name": "tt", "kind": "tiktok", "account": "1"},
    ]}
    with pytest.raises(SpecInvalid) as err:
        validate_spec_data(data)
    text = "\n".join(err.value.problems)
    assert "measurement.sources[2].lookback_days" in text
    assert "measurement.sources[3].kind" in text and "google_ads" in text
    data["measurement"]["sources"] = data["measurement"]["sources"][:2] + [
        {"name": "ga", "kind": "ga4", "account": "99", "columns": {"sessions": "sessions"}}]
    with pytest.raises(SpecInvalid) as err:
        validate_spec_data(data)
    problems = err.value.problems
    assert "measurement.sources[0].account: '12345' is not a Google Ads customer id such as 123-456-7890" in problems
    assert any(p.startswith("measurement.sources[1].account: a meta source needs `account`") for p in problems)
    assert any(p.startswith("measurement.sources[2].columns: only csv sources take a column mapping; a ga4 source "
                            "names its GA4 metrics under `metrics:`") for p in problems)


def test_a_row_sent_twice_in_one_run_is_stored_once_last_wins(store_url, server):
    settings.get().home_dir()
    data = register([source("meta", server)], url=store_url)
    start = start_of(data)
    server.meta += [meta_row(start, "c-1", "Spring", f"a{i}", 100, 10, 5.0) for i in range(5)]
    server.meta.append(meta_row(start, "c-1", "Spring", "a0", 100, 10, 7.0))  # same key, later page

    result = run("meta", "meta", start, since=start, url=store_url)

    assert result.rows_fetched == 6
    stored = rows(store_url)
    assert len(stored) == 5 and stored[0]["ad"] == "a0" and stored[0]["spend"] == 7.0
